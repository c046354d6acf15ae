#!/usr/bin/env bash
# The GPU op check, for the device machine (one call, a few minutes): every TensorKit op on CUDA
# against the CPU backend, forward and backward, float32/float16/bfloat16; prints a table and exits
# non-zero on any failure.
#
# Here (build machine):  scripts/build-gpu-bin.sh        # -> .gpu-bin/bundle.tar.xz
# Device machine (run tool), carry [".gpu-bin"]:
#                         scripts/gpu-check.sh [NAME-FILTER]
#
# No Swift and no CUDA toolkit are needed there: ddpo is static apart from the libraries in the
# bundle, and finds the driver (libcuda.so.1), NVRTC and cuBLAS at run time (scripts/gpu/env.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu/env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
timeout "${GPU_CHECK_TIMEOUT:-300}" "$DDPO" gpu-check "$@"
