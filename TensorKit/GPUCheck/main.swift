// The GPU op check (scripts/gpu-check.sh): runs every TensorKit op on CUDA against the CPU backend.
print("tensorkit-gpu-check: not written yet")
