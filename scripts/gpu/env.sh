# Sourced by scripts/gpu-check.sh and scripts/gpu-bench.sh on the GPU machine: unpacks the bundle that
# scripts/build-gpu-bin.sh made (carried as .gpu-bin) and points ddpo at the CUDA libraries there.
# Sets DDPO (the binary) and the library search variables.
GPU_BIN_DIR="${GPU_BIN_DIR:-$PWD/.gpu-bin}"
if [ -f "$GPU_BIN_DIR/bundle.tar.xz" ] && [ ! -x "$GPU_BIN_DIR/ddpo" ]; then
    tar -C "$GPU_BIN_DIR" -xJf "$GPU_BIN_DIR/bundle.tar.xz"
fi
DDPO="$GPU_BIN_DIR/ddpo"
export LD_LIBRARY_PATH="$GPU_BIN_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Site-packages of the local Python (PyTorch's NVIDIA wheels: nvidia/cu13/lib, nvidia/cuda_nvrtc/lib,
# nvidia/cublas/lib), for the library search; /usr/local/cuda is searched too.
if command -v python3 >/dev/null; then
    SITE=$(python3 -c 'import site; print(":".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null || true)
    NV=$(python3 -c 'import nvidia, os; print(":".join(os.path.dirname(p) for p in nvidia.__path__))' 2>/dev/null || true)
    export TENSORKIT_PYTHON_SITE_PACKAGES="${NV:+$NV:}$SITE"
fi
export TENSORKIT_KERNEL_CACHE="${TENSORKIT_KERNEL_CACHE:-/tmp/tensorkit-kernel-cache}"
