// tensorkit-eval: runs op programs (GPUCheckKit's OpPrograms; scripts/tensorkit_sweep.py writes them).
import Foundation
import GPUCheckKit

exit(OpPrograms.main(Array(CommandLine.arguments.dropFirst())))
