import Foundation

// Progress on stderr: a redrawn bar with rate and ETA on a terminal, plain lines at most every
// `interval` seconds (and at the end of each task) when stderr is a file or a pipe, so logs of
// background runs stay readable.
//
//   epoch 3 sampling  [##########----------]  12/24  3.1 it/s  ETA 0:04

final class ProgressReporter {
    let isTerminal: Bool
    let interval: TimeInterval
    let quiet: Bool
    private var label = ""
    private var start = Date()
    private var lastPrint = Date.distantPast
    private var drawn = false

    init(isTerminal: Bool = isatty(STDERR_FILENO) == 1, interval: TimeInterval = 10, quiet: Bool = false) {
        self.isTerminal = isTerminal
        self.interval = interval
        self.quiet = quiet
    }

    /// Reports `done` of `total` for the task `label`; a new label starts a new task (and rate clock).
    func update(_ label: String, done: Int, total: Int, extra: String = "") {
        guard !quiet else { return }
        let now = Date()
        if label != self.label {
            finishLine()
            self.label = label
            start = now
            lastPrint = .distantPast
        }
        let elapsed = now.timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let finished = done >= total
        let timing = finished ? "took " + Self.clock(elapsed) : (done > 0 && rate > 0 ? "ETA " + Self.clock(eta) : "ETA ?")
        let stats = String(format: "%d/%d  %.2f it/s  ", done, total, rate) + timing
            + (extra.isEmpty ? "" : "  " + extra)
        if isTerminal {
            let width = 24
            let filled = total > 0 ? min(width, done * width / total) : 0
            let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
            write("\r\u{1B}[2K\(label)  [\(bar)]  \(stats)")
            drawn = true
            if finished { finishLine() }
        } else if finished || now.timeIntervalSince(lastPrint) >= interval {
            lastPrint = now
            write("\(label): \(stats)\n")
        }
    }

    /// Prints a line of its own (ending any bar first).
    func line(_ text: String) {
        guard !quiet else { return }
        finishLine()
        write(text + "\n")
    }

    private func finishLine() {
        if drawn { write("\n") }
        drawn = false
    }

    private func write(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }

    /// m:ss or h:mm:ss.
    static func clock(_ seconds: TimeInterval) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}
