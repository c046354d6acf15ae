#!/usr/bin/env bash
# Runs a command against the emulated CUDA device (scripts/emu-cuda/emu_cuda.cpp): TensorKit's CUDA
# backend, its kernels (built for the host by make_module.py, with PTX emulated) and a host cuBLAS,
# all computing on the CPU. Slow (a kernel's threads are fibers), so meant for tiny models: it checks
# that what the backend launches computes what the CPU backend does, without a GPU.
#
# usage: scripts/emu-cuda/run.sh COMMAND [ARGS...]     e.g. scripts/emu-cuda/run.sh .build/release/ddpo gpu-check
# EMU_CUDA_DEFER=1 holds stream work until the host waits (see emu_cuda.cpp); EMU_CUDA_STATS=1 counts;
# EMU_CUDA_ORDER=shuffle (EMU_CUDA_SEED=N) runs warps ahead of each other between barriers (emu_fibers.h).
# Modules are cached in .build-emu-cuda/modules (keyed by the kernel source).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT="$ROOT/.build-emu-cuda"
mkdir -p "$OUT/modules"
if [ ! -f "$OUT/libcuda.so.1" ] || [ "$HERE/emu_cuda.cpp" -nt "$OUT/libcuda.so.1" ]; then
    g++ -std=c++20 -O2 -fPIC -shared -o "$OUT/libcuda.so.1.tmp" "$HERE/emu_cuda.cpp" -ldl -lopenblas
    mv "$OUT/libcuda.so.1.tmp" "$OUT/libcuda.so.1"
fi
# Modules depend on the emulation headers too (and the kernel cache holds their paths).
for h in "$HERE/emu_fibers.h" "$HERE/make_module.py" "$ROOT/scripts/emulate/cuda_host.h"; do
    if [ -n "$(find "$OUT/modules" -name '*.so' ! -newer "$h" -print -quit)" ]; then rm -rf "$OUT/modules"/* "$OUT/kernels"; break; fi
done
for name in libnvrtc.so.13 libcublas.so.13 libcublasLt.so.13; do ln -sf libcuda.so.1 "$OUT/$name"; done
export TENSORKIT_CUDA_DRIVER_PATH="$OUT/libcuda.so.1" TENSORKIT_CUBLAS_PATH="$OUT" TENSORKIT_NVRTC_PATH="$OUT/libnvrtc.so.13"
export TENSORKIT_KERNEL_CACHE="$OUT/kernels" EMU_CUDA_DIR="$HERE" EMU_CUDA_MODULES="$OUT/modules"
exec "$@"
