import Foundation

// The `vae/config.json` of a diffusers AutoencoderKL (diffusers 0.35.2 field names and defaults),
// decoded with Codable, plus `validate()`, which refuses every option this port does not implement
// with an error naming the field.
//
//   let config = try AutoencoderKLConfig.load(from: dir.appendingPathComponent("config.json"))
//   try config.validate()
//
// A key missing from the JSON takes diffusers' default. Unknown keys (`_class_name`,
// `_diffusers_version`, `_name_or_path`, …) are ignored, as UNet2DConditionConfig ignores them.
// `scaling_factor`, `shift_factor`, `latents_mean` and `latents_std` are read and kept for the caller:
// like diffusers' `AutoencoderKL`, the model itself never applies them (pipelines do:
// `vae.decode(latents / scaling_factor)`, SD3 also `+ shift_factor`). `sample_size` only sets
// diffusers' tiling tile size and `force_upcast` only matters to float16 pipelines; both are kept.

/// An error in an AutoencoderKL config: the field and what was expected.
public typealias AutoencoderKLConfigError = ModelConfigError<AutoencoderKLConfig>

extension AutoencoderKLConfig: NamedModelConfig {
    public static let modelName = "AutoencoderKL"
}

public struct AutoencoderKLConfig: Codable, Equatable, Sendable {
    public var in_channels = 3
    public var out_channels = 3
    public var down_block_types = ["DownEncoderBlock2D"]
    public var up_block_types = ["UpDecoderBlock2D"]
    public var block_out_channels = [64]
    public var layers_per_block = 1
    public var act_fn = "silu"
    public var latent_channels = 4
    public var norm_num_groups = 32
    /// An int or a [height, width] list (diffusers reads only the first entry, for tiling).
    public var sample_size: OneOrList<Int> = .one(32)
    public var scaling_factor: Double = 0.18215
    public var shift_factor: Double? = nil
    public var latents_mean: [Double]? = nil
    public var latents_std: [Double]? = nil
    public var force_upcast = true
    public var use_quant_conv = true
    public var use_post_quant_conv = true
    public var mid_block_add_attention = true

    /// diffusers' defaults (a one-level 64-channel VAE; Stable Diffusion's config sets
    /// block_out_channels [128, 256, 512, 512], layers_per_block 2, sample_size 512).
    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case in_channels, out_channels, down_block_types, up_block_types, block_out_channels, layers_per_block
        case act_fn, latent_channels, norm_num_groups, sample_size, scaling_factor, shift_factor, latents_mean
        case latents_std, force_upcast, use_quant_conv, use_post_quant_conv, mid_block_add_attention
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        // Missing key → the default above; present (null allowed for optionals) → the JSON value.
        func value<T: Decodable>(_ key: CodingKeys, _ current: T) throws -> T { try c.value(key, current) }
        func optional<T: Decodable>(_ key: CodingKeys, _ current: T?) throws -> T? { try c.optional(key, current) }
        in_channels = try value(.in_channels, in_channels)
        out_channels = try value(.out_channels, out_channels)
        down_block_types = try value(.down_block_types, down_block_types)
        up_block_types = try value(.up_block_types, up_block_types)
        block_out_channels = try value(.block_out_channels, block_out_channels)
        layers_per_block = try value(.layers_per_block, layers_per_block)
        act_fn = try value(.act_fn, act_fn)
        latent_channels = try value(.latent_channels, latent_channels)
        norm_num_groups = try value(.norm_num_groups, norm_num_groups)
        sample_size = try value(.sample_size, sample_size)
        scaling_factor = try value(.scaling_factor, scaling_factor)
        shift_factor = try optional(.shift_factor, shift_factor)
        latents_mean = try optional(.latents_mean, latents_mean)
        latents_std = try optional(.latents_std, latents_std)
        force_upcast = try value(.force_upcast, force_upcast)
        use_quant_conv = try value(.use_quant_conv, use_quant_conv)
        use_post_quant_conv = try value(.use_post_quant_conv, use_post_quant_conv)
        mid_block_add_attention = try value(.mid_block_add_attention, mid_block_add_attention)
    }

    /// Writes every field, nulls included (an omitted key would read back as diffusers' default).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(in_channels, forKey: .in_channels)
        try c.encode(out_channels, forKey: .out_channels)
        try c.encode(down_block_types, forKey: .down_block_types)
        try c.encode(up_block_types, forKey: .up_block_types)
        try c.encode(block_out_channels, forKey: .block_out_channels)
        try c.encode(layers_per_block, forKey: .layers_per_block)
        try c.encode(act_fn, forKey: .act_fn)
        try c.encode(latent_channels, forKey: .latent_channels)
        try c.encode(norm_num_groups, forKey: .norm_num_groups)
        try c.encode(sample_size, forKey: .sample_size)
        try c.encode(scaling_factor, forKey: .scaling_factor)
        try c.encode(shift_factor, forKey: .shift_factor)
        try c.encode(latents_mean, forKey: .latents_mean)
        try c.encode(latents_std, forKey: .latents_std)
        try c.encode(force_upcast, forKey: .force_upcast)
        try c.encode(use_quant_conv, forKey: .use_quant_conv)
        try c.encode(use_post_quant_conv, forKey: .use_post_quant_conv)
        try c.encode(mid_block_add_attention, forKey: .mid_block_add_attention)
    }

    /// Reads and decodes a config.json (errors name the file and, for type mismatches, the field).
    public static func load(from url: URL) throws -> AutoencoderKLConfig {
        try ConfigFile.decode(AutoencoderKLConfig.self, from: url) { field, message in AutoencoderKLConfigError(field: field, message, file: url.path) }
    }

    /// Checks every field against what this port builds (diffusers' `Encoder`/`Decoder` with
    /// `DownEncoderBlock2D`/`UpDecoderBlock2D` blocks and SiLU). Throws `AutoencoderKLConfigError`
    /// naming the first unsupported or inconsistent field.
    public func validate() throws {
        typealias E = AutoencoderKLConfigError
        func refuse(_ field: String, _ value: Any, _ supported: String) -> E {
            E(field: field, "\(value) is not supported (supported: \(supported))")
        }
        // diffusers' get_down_block / get_up_block strip a "UNetRes" prefix.
        func stripped(_ s: String) -> String { s.hasPrefix("UNetRes") ? String(s.dropFirst(7)) : s }

        let n = block_out_channels.count
        guard n > 0 else { throw E(field: "block_out_channels", "must list at least one block") }
        guard block_out_channels.allSatisfy({ $0 > 0 }) else {
            throw E(field: "block_out_channels", "must be positive, got \(block_out_channels)")
        }
        for name in down_block_types where stripped(name) != "DownEncoderBlock2D" {
            throw refuse("down_block_types", "\"\(name)\"", "\"DownEncoderBlock2D\"")
        }
        for name in up_block_types where stripped(name) != "UpDecoderBlock2D" {
            throw refuse("up_block_types", "\"\(name)\"", "\"UpDecoderBlock2D\"")
        }
        guard down_block_types.count == n else {
            throw E(field: "down_block_types", "has \(down_block_types.count) entries, expected one per block_out_channels entry (\(n))")
        }
        guard up_block_types.count == n else {
            throw E(field: "up_block_types", "has \(up_block_types.count) entries, expected one per block_out_channels entry (\(n))")
        }
        // The resnets take act_fn through get_activation ("swish" and "silu" are the same SiLU); the
        // encoder's and decoder's conv_act are a fixed nn.SiLU, so only SiLU gives a diffusers model.
        if !["silu", "swish"].contains(act_fn) { throw refuse("act_fn", "\"\(act_fn)\"", "\"silu\" (or \"swish\")") }
        guard layers_per_block >= 1 else { throw E(field: "layers_per_block", "must be at least 1, got \(layers_per_block)") }
        guard in_channels > 0 else { throw E(field: "in_channels", "must be positive, got \(in_channels)") }
        guard out_channels > 0 else { throw E(field: "out_channels", "must be positive, got \(out_channels)") }
        guard latent_channels > 0 else { throw E(field: "latent_channels", "must be positive, got \(latent_channels)") }
        for c in block_out_channels where norm_num_groups <= 0 || c % norm_num_groups != 0 {
            throw E(field: "norm_num_groups", "\(norm_num_groups) groups do not divide block_out_channels \(block_out_channels)")
        }
        guard scaling_factor.isFinite && scaling_factor != 0 else {
            throw E(field: "scaling_factor", "must be a finite non-zero number, got \(scaling_factor)")
        }
        if let s = shift_factor, !s.isFinite { throw E(field: "shift_factor", "must be finite or null, got \(s)") }
        for (field, values) in [("latents_mean", latents_mean), ("latents_std", latents_std)] {
            guard let values else { continue }
            guard values.count == latent_channels else {
                throw E(field: field, "has \(values.count) entries, expected one per latent channel (\(latent_channels))")
            }
            guard values.allSatisfy(\.isFinite) else { throw E(field: field, "must be finite numbers, got \(values)") }
        }
        if let std = latents_std, std.contains(where: { $0 <= 0 }) {
            throw E(field: "latents_std", "must be positive, got \(std)")
        }
        switch sample_size {
        case .one(let v) where v <= 0: throw E(field: "sample_size", "must be positive, got \(v)")
        case .list(let v) where v.isEmpty || v.contains(where: { $0 <= 0 }):
            throw E(field: "sample_size", "must be a positive int or a list of positive ints, got \(v)")
        default: break
        }
    }
}
