// ddpo-bench: Stable Diffusion and DDPO timings side by side with diffusers / TRL (in progress).
print("ddpo-bench: not written yet")
