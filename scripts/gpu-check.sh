#!/usr/bin/env bash
# The GPU op check, for the device machine (one call, under 8 minutes). Runs every TensorKit op
# on CUDA against the CPU backend and prints a table; exits non-zero on any failure.
#
# Here (build machine):   scripts/build-gpu-bin.sh        # -> .gpu-bin/{tensorkit-gpu-check,libopenblas.so.0,libgfortran.so.5}
# Device machine (run tool), carry [".gpu-bin"]:
#                          scripts/gpu-check.sh
#
# No Swift and no CUDA toolkit are needed there: the binary is static apart from OpenBLAS, and
# finds the driver (libcuda.so.1), NVRTC and cuBLAS at run time: from the NVIDIA pip wheels of the
# installed PyTorch (nvidia/cu13/lib, nvidia/cuda_nvrtc/lib, nvidia/cublas/lib) or /usr/local/cuda.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN_DIR="${GPU_BIN_DIR:-$PWD/.gpu-bin}"
export LD_LIBRARY_PATH="$BIN_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Site-packages of the local Python (where PyTorch's NVIDIA wheels live), for the library search.
if command -v python3 >/dev/null; then
    SITE=$(python3 -c 'import site, sys; print(":".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null || true)
    NV=$(python3 -c 'import nvidia, os; print(":".join(os.path.dirname(p) for p in nvidia.__path__))' 2>/dev/null || true)
    export TENSORKIT_PYTHON_SITE_PACKAGES="${NV:+$NV:}$SITE"
fi
export TENSORKIT_KERNEL_CACHE="${TENSORKIT_KERNEL_CACHE:-$PWD/.gpu-kernel-cache}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
timeout 420 "$BIN_DIR/tensorkit-gpu-check" "$@"
