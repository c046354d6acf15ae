// RLAlgorithms: DDPO and LoRA on DiffusionModels (see the RLAlgorithms issue).
@_exported import DiffusionModels
