import Foundation
import TensorKit

// The `ddpo` command. Training, sampling and the rest arrive with the app issue; for now it runs
// the worked examples in notebooks-md/ (the same code the test suite runs).

let usage = """
    usage: ddpo <command>

    commands:
      notebook 01    run notebooks-md/01-tensors-and-autograd.md (tensors, autograd, a small MLP)
      help           show this message
    """

let notebooks: [String: () -> Double] = ["01": { notebook01() }]

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("ddpo: \(message)\n".utf8))
    exit(2)
}

var arguments = Array(CommandLine.arguments.dropFirst())
switch arguments.first {
case nil, "help", "--help", "-h":
    print(usage)
case "notebook":
    guard arguments.count == 2 else { fail("notebook needs exactly one name, one of: \(notebooks.keys.sorted().joined(separator: ", "))") }
    guard let run = notebooks[arguments[1]] else {
        fail("unknown notebook '\(arguments[1])'; available: \(notebooks.keys.sorted().joined(separator: ", "))")
    }
    let start = Date()
    let result = run()
    print(String(format: "notebook %@ finished in %.1f s (result %.6g)", arguments[1], Date().timeIntervalSince(start), result))
default:
    fail("unknown command '\(arguments[0])'\n\(usage)")
}
