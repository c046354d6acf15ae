import Foundation

/// An error the app reports as one line on stderr and exits non-zero with (usage errors exit 2).
struct AppError: Error, CustomStringConvertible {
    var message: String
    var exitCode: Int32
    init(_ message: String, exitCode: Int32 = 2) {
        self.message = message
        self.exitCode = exitCode
    }
    var description: String { message }
}
