import Foundation

// The `unet/config.json` of a diffusers UNet2DConditionModel (diffusers 0.35.2 field names and
// defaults), decoded with Codable, plus `validate()`, which refuses every option this port does not
// implement with an error naming the field.
//
//   let config = try UNet2DConditionConfig.load(from: dir.appendingPathComponent("config.json"))
//   let blocks = try config.resolved()      // per-block values as the diffusers constructor derives them
//
// A key missing from the JSON takes diffusers' default; an explicit `null` means None (for
// `mid_block_type` None removes the mid block, for `norm_num_groups` it removes the output norm —
// refused here). Unknown keys (`_class_name`, `_diffusers_version`, ...) are ignored.

/// An error in a UNet config: the field and what was expected.
public typealias UNet2DConditionConfigError = ModelConfigError<UNet2DConditionConfig>

extension UNet2DConditionConfig: NamedModelConfig {
    public static let modelName = "UNet2DConditionModel"
}

/// A JSON value that is either one value or a list (diffusers' `Union[int, Tuple[int]]`).
public enum OneOrList<Element: Codable & Equatable & Sendable>: Codable, Equatable, Sendable {
    case one(Element)
    case list([Element])

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let value = try? container.decode(Element.self) {
            self = .one(value)
        } else {
            self = .list(try container.decode([Element].self))
        }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .one(let v): try container.encode(v)
        case .list(let v): try container.encode(v)
        }
    }

    /// The value per block: a single value repeated `count` times, or the list (whose length must be `count`).
    func perBlock(_ count: Int, field: String) throws -> [Element] {
        switch self {
        case .one(let v): return Array(repeating: v, count: count)
        case .list(let v):
            guard v.count == count else {
                throw UNet2DConditionConfigError(field: field, "has \(v.count) entries, expected one per down block (\(count))")
            }
            return v
        }
    }
}

/// `transformer_layers_per_block`: an int, a list of ints, or (SDXL-style, not supported) a list of lists.
public enum TransformerLayersSpec: Codable, Equatable, Sendable {
    case one(Int)
    case list([Int])
    case nested([[Int]])

    public init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let v = try? container.decode(Int.self) { self = .one(v) }
        else if let v = try? container.decode([Int].self) { self = .list(v) }
        else { self = .nested(try container.decode([[Int]].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .one(let v): try container.encode(v)
        case .list(let v): try container.encode(v)
        case .nested(let v): try container.encode(v)
        }
    }
}

public struct UNet2DConditionConfig: Codable, Equatable, Sendable {
    public var sample_size: OneOrList<Int>? = nil
    public var in_channels = 4
    public var out_channels = 4
    public var center_input_sample = false
    public var flip_sin_to_cos = true
    public var freq_shift: Double = 0
    public var down_block_types = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
    public var mid_block_type: String? = "UNetMidBlock2DCrossAttn"
    public var up_block_types = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    public var only_cross_attention: OneOrList<Bool> = .one(false)
    public var block_out_channels = [320, 640, 1280, 1280]
    public var layers_per_block: OneOrList<Int> = .one(2)
    public var downsample_padding = 1
    public var mid_block_scale_factor: Double = 1
    public var dropout: Double = 0
    public var act_fn = "silu"
    public var norm_num_groups: Int? = 32
    public var norm_eps: Double = 1e-5
    public var cross_attention_dim: OneOrList<Int> = .one(1280)
    public var transformer_layers_per_block: TransformerLayersSpec = .one(1)
    public var reverse_transformer_layers_per_block: [[Int]]? = nil
    public var encoder_hid_dim: Int? = nil
    public var encoder_hid_dim_type: String? = nil
    public var attention_head_dim: OneOrList<Int> = .one(8)
    public var num_attention_heads: OneOrList<Int>? = nil
    public var dual_cross_attention = false
    public var use_linear_projection = false
    public var class_embed_type: String? = nil
    public var addition_embed_type: String? = nil
    public var addition_time_embed_dim: Int? = nil
    public var num_class_embeds: Int? = nil
    public var upcast_attention = false
    public var resnet_time_scale_shift = "default"
    public var resnet_skip_time_act = false
    public var resnet_out_scale_factor: Double = 1
    public var time_embedding_type = "positional"
    public var time_embedding_dim: Int? = nil
    public var time_embedding_act_fn: String? = nil
    public var timestep_post_act: String? = nil
    public var time_cond_proj_dim: Int? = nil
    public var conv_in_kernel = 3
    public var conv_out_kernel = 3
    public var projection_class_embeddings_input_dim: Int? = nil
    public var attention_type = "default"
    public var class_embeddings_concat = false
    public var mid_block_only_cross_attention: Bool? = nil
    public var cross_attention_norm: String? = nil
    public var addition_embed_type_num_heads = 64

    /// diffusers' defaults (SD 1.x-sized).
    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case sample_size, in_channels, out_channels, center_input_sample, flip_sin_to_cos, freq_shift
        case down_block_types, mid_block_type, up_block_types, only_cross_attention, block_out_channels
        case layers_per_block, downsample_padding, mid_block_scale_factor, dropout, act_fn, norm_num_groups
        case norm_eps, cross_attention_dim, transformer_layers_per_block, reverse_transformer_layers_per_block
        case encoder_hid_dim, encoder_hid_dim_type, attention_head_dim, num_attention_heads, dual_cross_attention
        case use_linear_projection, class_embed_type, addition_embed_type, addition_time_embed_dim, num_class_embeds
        case upcast_attention, resnet_time_scale_shift, resnet_skip_time_act, resnet_out_scale_factor
        case time_embedding_type, time_embedding_dim, time_embedding_act_fn, timestep_post_act, time_cond_proj_dim
        case conv_in_kernel, conv_out_kernel, projection_class_embeddings_input_dim, attention_type
        case class_embeddings_concat, mid_block_only_cross_attention, cross_attention_norm
        case addition_embed_type_num_heads
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // Missing key → the default above; present (null allowed for optionals) → the JSON value.
        func value<T: Decodable>(_ key: CodingKeys, _ current: T) throws -> T { try c.value(key, current) }
        func optional<T: Decodable>(_ key: CodingKeys, _ current: T?) throws -> T? { try c.optional(key, current) }
        sample_size = try optional(.sample_size, sample_size)
        in_channels = try value(.in_channels, in_channels)
        out_channels = try value(.out_channels, out_channels)
        center_input_sample = try value(.center_input_sample, center_input_sample)
        flip_sin_to_cos = try value(.flip_sin_to_cos, flip_sin_to_cos)
        freq_shift = try value(.freq_shift, freq_shift)
        down_block_types = try value(.down_block_types, down_block_types)
        mid_block_type = try optional(.mid_block_type, mid_block_type)
        up_block_types = try value(.up_block_types, up_block_types)
        only_cross_attention = try value(.only_cross_attention, only_cross_attention)
        block_out_channels = try value(.block_out_channels, block_out_channels)
        layers_per_block = try value(.layers_per_block, layers_per_block)
        downsample_padding = try value(.downsample_padding, downsample_padding)
        mid_block_scale_factor = try value(.mid_block_scale_factor, mid_block_scale_factor)
        dropout = try value(.dropout, dropout)
        act_fn = try value(.act_fn, act_fn)
        norm_num_groups = try optional(.norm_num_groups, norm_num_groups)
        norm_eps = try value(.norm_eps, norm_eps)
        cross_attention_dim = try value(.cross_attention_dim, cross_attention_dim)
        transformer_layers_per_block = try value(.transformer_layers_per_block, transformer_layers_per_block)
        reverse_transformer_layers_per_block = try optional(.reverse_transformer_layers_per_block, reverse_transformer_layers_per_block)
        encoder_hid_dim = try optional(.encoder_hid_dim, encoder_hid_dim)
        encoder_hid_dim_type = try optional(.encoder_hid_dim_type, encoder_hid_dim_type)
        attention_head_dim = try value(.attention_head_dim, attention_head_dim)
        num_attention_heads = try optional(.num_attention_heads, num_attention_heads)
        dual_cross_attention = try value(.dual_cross_attention, dual_cross_attention)
        use_linear_projection = try value(.use_linear_projection, use_linear_projection)
        class_embed_type = try optional(.class_embed_type, class_embed_type)
        addition_embed_type = try optional(.addition_embed_type, addition_embed_type)
        addition_time_embed_dim = try optional(.addition_time_embed_dim, addition_time_embed_dim)
        num_class_embeds = try optional(.num_class_embeds, num_class_embeds)
        upcast_attention = try value(.upcast_attention, upcast_attention)
        resnet_time_scale_shift = try value(.resnet_time_scale_shift, resnet_time_scale_shift)
        resnet_skip_time_act = try value(.resnet_skip_time_act, resnet_skip_time_act)
        resnet_out_scale_factor = try value(.resnet_out_scale_factor, resnet_out_scale_factor)
        time_embedding_type = try value(.time_embedding_type, time_embedding_type)
        time_embedding_dim = try optional(.time_embedding_dim, time_embedding_dim)
        time_embedding_act_fn = try optional(.time_embedding_act_fn, time_embedding_act_fn)
        timestep_post_act = try optional(.timestep_post_act, timestep_post_act)
        time_cond_proj_dim = try optional(.time_cond_proj_dim, time_cond_proj_dim)
        conv_in_kernel = try value(.conv_in_kernel, conv_in_kernel)
        conv_out_kernel = try value(.conv_out_kernel, conv_out_kernel)
        projection_class_embeddings_input_dim = try optional(.projection_class_embeddings_input_dim, projection_class_embeddings_input_dim)
        attention_type = try value(.attention_type, attention_type)
        class_embeddings_concat = try value(.class_embeddings_concat, class_embeddings_concat)
        mid_block_only_cross_attention = try optional(.mid_block_only_cross_attention, mid_block_only_cross_attention)
        cross_attention_norm = try optional(.cross_attention_norm, cross_attention_norm)
        addition_embed_type_num_heads = try value(.addition_embed_type_num_heads, addition_embed_type_num_heads)
    }

    /// Writes every field, nulls included (an omitted key would read back as diffusers' default).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(sample_size, forKey: .sample_size)
        try c.encode(in_channels, forKey: .in_channels)
        try c.encode(out_channels, forKey: .out_channels)
        try c.encode(center_input_sample, forKey: .center_input_sample)
        try c.encode(flip_sin_to_cos, forKey: .flip_sin_to_cos)
        try c.encode(freq_shift, forKey: .freq_shift)
        try c.encode(down_block_types, forKey: .down_block_types)
        try c.encode(mid_block_type, forKey: .mid_block_type)
        try c.encode(up_block_types, forKey: .up_block_types)
        try c.encode(only_cross_attention, forKey: .only_cross_attention)
        try c.encode(block_out_channels, forKey: .block_out_channels)
        try c.encode(layers_per_block, forKey: .layers_per_block)
        try c.encode(downsample_padding, forKey: .downsample_padding)
        try c.encode(mid_block_scale_factor, forKey: .mid_block_scale_factor)
        try c.encode(dropout, forKey: .dropout)
        try c.encode(act_fn, forKey: .act_fn)
        try c.encode(norm_num_groups, forKey: .norm_num_groups)
        try c.encode(norm_eps, forKey: .norm_eps)
        try c.encode(cross_attention_dim, forKey: .cross_attention_dim)
        try c.encode(transformer_layers_per_block, forKey: .transformer_layers_per_block)
        try c.encode(reverse_transformer_layers_per_block, forKey: .reverse_transformer_layers_per_block)
        try c.encode(encoder_hid_dim, forKey: .encoder_hid_dim)
        try c.encode(encoder_hid_dim_type, forKey: .encoder_hid_dim_type)
        try c.encode(attention_head_dim, forKey: .attention_head_dim)
        try c.encode(num_attention_heads, forKey: .num_attention_heads)
        try c.encode(dual_cross_attention, forKey: .dual_cross_attention)
        try c.encode(use_linear_projection, forKey: .use_linear_projection)
        try c.encode(class_embed_type, forKey: .class_embed_type)
        try c.encode(addition_embed_type, forKey: .addition_embed_type)
        try c.encode(addition_time_embed_dim, forKey: .addition_time_embed_dim)
        try c.encode(num_class_embeds, forKey: .num_class_embeds)
        try c.encode(upcast_attention, forKey: .upcast_attention)
        try c.encode(resnet_time_scale_shift, forKey: .resnet_time_scale_shift)
        try c.encode(resnet_skip_time_act, forKey: .resnet_skip_time_act)
        try c.encode(resnet_out_scale_factor, forKey: .resnet_out_scale_factor)
        try c.encode(time_embedding_type, forKey: .time_embedding_type)
        try c.encode(time_embedding_dim, forKey: .time_embedding_dim)
        try c.encode(time_embedding_act_fn, forKey: .time_embedding_act_fn)
        try c.encode(timestep_post_act, forKey: .timestep_post_act)
        try c.encode(time_cond_proj_dim, forKey: .time_cond_proj_dim)
        try c.encode(conv_in_kernel, forKey: .conv_in_kernel)
        try c.encode(conv_out_kernel, forKey: .conv_out_kernel)
        try c.encode(projection_class_embeddings_input_dim, forKey: .projection_class_embeddings_input_dim)
        try c.encode(attention_type, forKey: .attention_type)
        try c.encode(class_embeddings_concat, forKey: .class_embeddings_concat)
        try c.encode(mid_block_only_cross_attention, forKey: .mid_block_only_cross_attention)
        try c.encode(cross_attention_norm, forKey: .cross_attention_norm)
        try c.encode(addition_embed_type_num_heads, forKey: .addition_embed_type_num_heads)
    }

    /// Reads and decodes a config.json (errors name the file and, for type mismatches, the field).
    public static func load(from url: URL) throws -> UNet2DConditionConfig {
        try ConfigFile.decode(UNet2DConditionConfig.self, from: url) { field, message in UNet2DConditionConfigError(field: field, message, file: url.path) }
    }
}


/// The per-block values the diffusers constructor derives from a config.
public struct UNet2DConditionResolved: Equatable, Sendable {
    public enum DownKind: String, Sendable { case plain = "DownBlock2D", crossAttention = "CrossAttnDownBlock2D" }
    public enum UpKind: String, Sendable { case plain = "UpBlock2D", crossAttention = "CrossAttnUpBlock2D" }

    public var downKinds: [DownKind]
    public var upKinds: [UpKind]
    public var hasMidBlock: Bool
    public var layersPerBlock: [Int]
    public var transformerLayersPerBlock: [Int]
    /// Heads per down block: diffusers' `num_attention_heads or attention_head_dim` (the config's
    /// `attention_head_dim` is, for historical reasons, the number of heads; head width = channels / heads).
    public var attentionHeads: [Int]
    public var crossAttentionDims: [Int]
    public var normNumGroups: Int
    public var timeEmbedDim: Int
}

extension UNet2DConditionConfig {
    /// Validates the config and derives the per-block values. Throws `UNet2DConditionConfigError`
    /// naming the first unsupported or inconsistent field.
    public func resolved() throws -> UNet2DConditionResolved {
        typealias E = UNet2DConditionConfigError
        func refuse(_ field: String, _ value: Any, _ supported: String) -> E {
            E(field: field, "\(value) is not supported (supported: \(supported))")
        }

        // Options of diffusers this port does not implement: refuse any non-default value.
        if num_attention_heads != nil {
            // diffusers 0.35.2 raises for this field too (the naming issue #2011); configs use attention_head_dim.
            throw E(field: "num_attention_heads", "must be null: diffusers 0.35.2 refuses it as well; set the head count with attention_head_dim")
        }
        if case .list(let v) = only_cross_attention, v.contains(true) { throw refuse("only_cross_attention", v, "false") }
        if case .one(true) = only_cross_attention { throw refuse("only_cross_attention", true, "false") }
        if dual_cross_attention { throw refuse("dual_cross_attention", true, "false") }
        if !["silu", "swish"].contains(act_fn) { throw refuse("act_fn", "\"\(act_fn)\"", "\"silu\"") }
        if resnet_time_scale_shift != "default" { throw refuse("resnet_time_scale_shift", "\"\(resnet_time_scale_shift)\"", "\"default\"") }
        if time_embedding_type != "positional" { throw refuse("time_embedding_type", "\"\(time_embedding_type)\"", "\"positional\"") }
        if attention_type != "default" { throw refuse("attention_type", "\"\(attention_type)\"", "\"default\"") }
        if let v = class_embed_type { throw refuse("class_embed_type", "\"\(v)\"", "null") }
        if let v = num_class_embeds { throw refuse("num_class_embeds", v, "null") }
        if class_embeddings_concat { throw refuse("class_embeddings_concat", true, "false") }
        if let v = addition_embed_type { throw refuse("addition_embed_type", "\"\(v)\"", "null") }
        if let v = encoder_hid_dim { throw refuse("encoder_hid_dim", v, "null") }
        if let v = encoder_hid_dim_type { throw refuse("encoder_hid_dim_type", "\"\(v)\"", "null") }
        if let v = time_cond_proj_dim { throw refuse("time_cond_proj_dim", v, "null") }
        if let v = time_embedding_act_fn { throw refuse("time_embedding_act_fn", "\"\(v)\"", "null") }
        if let v = timestep_post_act { throw refuse("timestep_post_act", "\"\(v)\"", "null") }
        if let v = cross_attention_norm { throw refuse("cross_attention_norm", "\"\(v)\"", "null") }
        // These three only reach block types this port does not build (ResnetDownsampleBlock2D,
        // SimpleCrossAttn*), but a config that sets them was written for those models: refuse it.
        if resnet_skip_time_act { throw refuse("resnet_skip_time_act", true, "false") }
        if resnet_out_scale_factor != 1 { throw refuse("resnet_out_scale_factor", resnet_out_scale_factor, "1.0") }
        if mid_block_only_cross_attention == true { throw refuse("mid_block_only_cross_attention", true, "null or false") }
        if let v = reverse_transformer_layers_per_block { throw refuse("reverse_transformer_layers_per_block", v, "null") }
        if case .nested(let v) = transformer_layers_per_block {
            throw refuse("transformer_layers_per_block", v, "an int or one int per block")
        }
        // (addition_time_embed_dim, projection_class_embeddings_input_dim and
        // addition_embed_type_num_heads are read by diffusers only together with the refused
        // class/addition embeddings, so they are ignored, as diffusers ignores them.)

        // Structure.
        let n = down_block_types.count
        guard n > 0 else { throw E(field: "down_block_types", "must list at least one block") }
        guard up_block_types.count == n else {
            throw E(field: "up_block_types", "has \(up_block_types.count) entries, expected \(n) (one per down block)")
        }
        guard block_out_channels.count == n else {
            throw E(field: "block_out_channels", "has \(block_out_channels.count) entries, expected \(n) (one per down block)")
        }
        guard block_out_channels.allSatisfy({ $0 > 0 }) else { throw E(field: "block_out_channels", "must be positive") }
        guard in_channels > 0 else { throw E(field: "in_channels", "must be positive, got \(in_channels)") }
        guard out_channels > 0 else { throw E(field: "out_channels", "must be positive, got \(out_channels)") }
        // diffusers strips a "UNetRes" prefix from block type names.
        func stripped(_ s: String) -> String { s.hasPrefix("UNetRes") ? String(s.dropFirst(7)) : s }
        let downKinds = try down_block_types.map { name -> UNet2DConditionResolved.DownKind in
            guard let k = UNet2DConditionResolved.DownKind(rawValue: stripped(name)) else {
                throw refuse("down_block_types", "\"\(name)\"", "\"CrossAttnDownBlock2D\", \"DownBlock2D\"")
            }
            return k
        }
        let upKinds = try up_block_types.map { name -> UNet2DConditionResolved.UpKind in
            guard let k = UNet2DConditionResolved.UpKind(rawValue: stripped(name)) else {
                throw refuse("up_block_types", "\"\(name)\"", "\"CrossAttnUpBlock2D\", \"UpBlock2D\"")
            }
            return k
        }
        if let mid = mid_block_type, mid != "UNetMidBlock2DCrossAttn" {
            throw refuse("mid_block_type", "\"\(mid)\"", "\"UNetMidBlock2DCrossAttn\" or null")
        }
        guard let groups = norm_num_groups else {
            throw E(field: "norm_num_groups", "null (no output norm) is not supported")
        }
        for c in block_out_channels where groups <= 0 || c % groups != 0 {
            throw E(field: "norm_num_groups", "\(groups) groups do not divide block_out_channels \(block_out_channels)")
        }
        guard norm_eps > 0 else { throw E(field: "norm_eps", "must be positive, got \(norm_eps)") }
        guard dropout >= 0 && dropout < 1 else { throw E(field: "dropout", "must be in [0, 1), got \(dropout)") }
        guard downsample_padding >= 0 else { throw E(field: "downsample_padding", "must be >= 0, got \(downsample_padding)") }
        for (field, k) in [("conv_in_kernel", conv_in_kernel), ("conv_out_kernel", conv_out_kernel)] where k < 1 || k % 2 == 0 {
            throw E(field: field, "must be a positive odd kernel size, got \(k)")
        }

        let layers = try layers_per_block.perBlock(n, field: "layers_per_block")
        guard layers.allSatisfy({ $0 >= 1 }) else { throw E(field: "layers_per_block", "must be at least 1, got \(layers)") }
        let transformerLayers: [Int]
        switch transformer_layers_per_block {
        case .one(let v): transformerLayers = Array(repeating: v, count: n)
        case .list(let v):
            guard v.count == n else {
                throw E(field: "transformer_layers_per_block", "has \(v.count) entries, expected one per down block (\(n))")
            }
            transformerLayers = v
        case .nested: fatalError("refused above")
        }
        guard transformerLayers.allSatisfy({ $0 >= 1 }) else {
            throw E(field: "transformer_layers_per_block", "must be at least 1, got \(transformerLayers)")
        }
        let heads = try attention_head_dim.perBlock(n, field: "attention_head_dim")
        // Only levels with attention use their head count (diffusers ignores it for plain blocks).
        func hasAttention(_ i: Int) -> Bool {
            downKinds[i] == .crossAttention || upKinds[n - 1 - i] == .crossAttention || (i == n - 1 && mid_block_type != nil)
        }
        for (i, h) in heads.enumerated() where hasAttention(i) && (h < 1 || block_out_channels[i] / h < 1) {
            throw E(field: "attention_head_dim", "\(h) heads (diffusers reads attention_head_dim as the head count) do not fit \(block_out_channels[i]) channels in block \(i)")
        }
        let crossDims = try cross_attention_dim.perBlock(n, field: "cross_attention_dim")
        guard crossDims.allSatisfy({ $0 > 0 }) else { throw E(field: "cross_attention_dim", "must be positive, got \(crossDims)") }
        let timeEmbedDim = time_embedding_dim ?? block_out_channels[0] * 4
        guard timeEmbedDim > 0 else { throw E(field: "time_embedding_dim", "must be positive, got \(timeEmbedDim)") }
        guard block_out_channels[0] >= 2 else { throw E(field: "block_out_channels", "the first entry must be at least 2 (timestep features)") }

        return UNet2DConditionResolved(
            downKinds: downKinds, upKinds: upKinds, hasMidBlock: mid_block_type != nil, layersPerBlock: layers,
            transformerLayersPerBlock: transformerLayers, attentionHeads: heads, crossAttentionDims: crossDims,
            normNumGroups: groups, timeEmbedDim: timeEmbedDim)
    }
}
