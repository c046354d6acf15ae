// The GPU op check (scripts/gpu-check.sh): runs every TensorKit op on CUDA against the CPU backend.
//
//   tensorkit-gpu-check                 all op checks (needs a CUDA device); exit 1 on any failure
//   tensorkit-gpu-check --compile-only  compile every kernel source with NVRTC for sm_80 and sm_90
//                                       (no GPU needed); exit 1 on any error or warning
//   tensorkit-gpu-check --print-source flash_attention.float16
//                                       print one kernel source as NVRTC receives it
import Foundation
import GPUCheckKit

setvbuf(stdout, nil, _IOLBF, 0)
let arguments = Array(CommandLine.arguments.dropFirst())

exit(GPUCheck.main(arguments))
