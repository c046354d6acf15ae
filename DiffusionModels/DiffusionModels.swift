// DiffusionModels: Stable Diffusion on TensorKit (see the DiffusionModels issue).
@_exported import TensorKit
