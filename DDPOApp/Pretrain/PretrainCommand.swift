import Foundation

/// `ddpo pretrain`: trains the built-in model from scratch (stub until the pretraining lands).
enum PretrainCommand {
    static let usage = "usage: ddpo pretrain [--out DIR]"
    static func run(_ arguments: [String]) throws {
        throw AppError("pretrain is not available yet")
    }
}
