// CUDA C sources of every TensorKit kernel, compiled at run time by NVRTC (see CUDAKernels.swift).
//
// A "family" is one translation unit of related kernels. Typed families are compiled once per
// storage dtype: the prelude below is prefixed with `#define TK_DTYPE n`, which selects
// T (the storage type) and ACC (the accumulation type: double for float64, float otherwise).
// float16 and bfloat16 are plain 16-bit structs converted with PTX `cvt` (float16) and bit
// arithmetic identical to the CPU's `bfloat16Bits` (bfloat16), so no CUDA header is needed and
// NVRTC compiles everything without include paths.
//
// Every kernel is `extern "C"` (unmangled names, found with cuModuleGetFunction) and uses 64-bit
// grid-stride indexing. Strided inputs are described by `TKGeom` (see CUDAGeometry.swift for the
// host-side layout, which must stay byte-identical).

/// One compilable unit: a family instantiated for one dtype (or dtype-independent).
public struct CUDAKernelSource: Sendable, Hashable {
    /// Family name, e.g. "elementwise".
    public let family: String
    /// Storage dtype of a typed family; nil for dtype-independent families.
    public let dtype: DType?
    /// Complete CUDA C text handed to NVRTC.
    public let source: String
    /// The `extern "C"` kernels it defines.
    public let kernels: [String]

    /// "elementwise.float16" or "memory".
    public var name: String { dtype.map { "\(family).\($0)" } ?? family }
}

public enum CUDAKernelSources {
    /// Storage dtypes the typed families are compiled for.
    public static let floatTypes: [DType] = [.float32, .float64, .float16, .bfloat16]

    /// Numeric code of a dtype inside kernels (TK_DTYPE and the runtime `code` arguments).
    public static func code(_ dtype: DType) -> Int32 {
        switch dtype {
        case .float32: return 0
        case .float64: return 1
        case .float16: return 2
        case .bfloat16: return 3
        case .int32: return 4
        case .int64: return 5
        case .uint8: return 6
        case .bool: return 7
        }
    }

    /// (family, body, kernels, typed?)
    static let families: [(String, String, [String], Bool)] = [
        ("memory", memoryBody, ["tk_copy", "tk_copy_transpose", "tk_fill", "tk_random"], false),
        ("elementwise", elementwiseBody, ["tk_unary", "tk_unary_backward", "tk_binary", "tk_select",
                                          "tk_geglu_forward", "tk_geglu_backward"], true),
        ("reduce", reduceBody, ["tk_reduce_rows"], true),
        ("norm", normBody, ["tk_group_norm_partial", "tk_group_norm_forward", "tk_group_norm_backward_partial",
                            "tk_group_norm_backward", "tk_group_norm_params",
                            "tk_layer_norm_forward", "tk_layer_norm_backward",
                            "tk_layer_norm_forward_warp", "tk_layer_norm_backward_warp",
                            "tk_layer_norm_params_partial", "tk_layer_norm_params_reduce"], true),
        ("softmax", softmaxBody, ["tk_softmax_forward", "tk_softmax_backward"], true),
        ("attention", attentionBody, ["tk_attention_forward", "tk_attention_backward_rowdot",
                                      "tk_attention_backward_dq", "tk_attention_backward_dkdv",
                                      "tk_attention_softmax_rows", "tk_attention_probs", "tk_attention_dscores"], true),
        ("flash_attention", flashAttentionBody, flashAttentionKernels, true),
        ("conv_mma", convMMABody, convMMAKernels, true),
        ("conv", convBody, ["tk_im2col", "tk_col2im", "tk_bias_residual"], true),
        ("embedding", embeddingBody, ["tk_embedding_forward", "tk_embedding_backward"], true),
    ]

    /// The source of `family` for `dtype` (nil for dtype-independent families).
    public static func source(family: String, dtype: DType?) -> CUDAKernelSource {
        guard let entry = families.first(where: { $0.0 == family }) else {
            preconditionFailure("no CUDA kernel family named \(family)")
        }
        let typed = entry.3
        precondition(typed == (dtype != nil), "kernel family \(family) is \(typed ? "" : "not ")typed")
        let define = "#define TK_DTYPE \(dtype.map { code($0) } ?? 0)\n" + (CUDA.vectorAccess ? "" : "#define TK_NO_VECTORS 1\n")
        return CUDAKernelSource(family: family, dtype: dtype, source: define + prelude + entry.1, kernels: entry.2)
    }

    /// Every compilable unit: each typed family for each float dtype, and the untyped ones once.
    public static var all: [CUDAKernelSource] {
        families.flatMap { entry -> [CUDAKernelSource] in
            entry.3 ? floatTypes.map { source(family: entry.0, dtype: $0) } : [source(family: entry.0, dtype: nil)]
        }
    }
}
