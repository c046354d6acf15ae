import Foundation

/// How betas are spread over the training timesteps (diffusers' `beta_schedule`).
public enum BetaSchedule: String, Codable, Sendable, CaseIterable {
    case linear
    case scaledLinear = "scaled_linear"
    case squaredcosCapV2 = "squaredcos_cap_v2"
}

/// What the denoising model predicts (diffusers' `prediction_type`).
public enum PredictionType: String, Codable, Sendable, CaseIterable {
    case epsilon
    case vPrediction = "v_prediction"
    case sample
}

/// How inference timesteps are placed (diffusers' `timestep_spacing`, Table 2 of
/// "Common Diffusion Noise Schedules and Sample Steps are Flawed").
public enum TimestepSpacing: String, Codable, Sendable, CaseIterable {
    case leading, trailing, linspace
}

/// The fields of diffusers' `DDIMScheduler` config, decoded from a `scheduler_config.json`.
///
/// Any scheduler's config is accepted, as `DDIMScheduler.from_config` does (Stable Diffusion 1.5
/// ships a `PNDMScheduler` config that DDPO converts): fields that belong to other schedulers
/// (`skip_prk_steps`, `_class_name`, …) are ignored, missing fields take DDIM's defaults, and a
/// DDIM field whose value is null, of the wrong type or not implemented is an error naming it.
public struct DDIMSchedulerConfig: Codable, Equatable, Sendable {
    public var numTrainTimesteps: Int = 1000
    public var betaStart: Double = 0.0001
    public var betaEnd: Double = 0.02
    public var betaSchedule: BetaSchedule = .linear
    /// Betas given directly; when set they replace `betaStart`/`betaEnd`/`betaSchedule`.
    public var trainedBetas: [Double]? = nil
    public var clipSample: Bool = true
    public var clipSampleRange: Double = 1.0
    /// Whether the step after the last one uses ᾱ = 1 (otherwise ᾱ at timestep 0).
    public var setAlphaToOne: Bool = true
    public var stepsOffset: Int = 0
    public var predictionType: PredictionType = .epsilon
    public var thresholding: Bool = false
    public var dynamicThresholdingRatio: Double = 0.995
    public var sampleMaxValue: Double = 1.0
    public var timestepSpacing: TimestepSpacing = .leading
    public var rescaleBetasZeroSnr: Bool = false

    /// DDIM's defaults (diffusers 0.35.2).
    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case numTrainTimesteps = "num_train_timesteps"
        case betaStart = "beta_start"
        case betaEnd = "beta_end"
        case betaSchedule = "beta_schedule"
        case trainedBetas = "trained_betas"
        case clipSample = "clip_sample"
        case clipSampleRange = "clip_sample_range"
        case setAlphaToOne = "set_alpha_to_one"
        case stepsOffset = "steps_offset"
        case predictionType = "prediction_type"
        case thresholding
        case dynamicThresholdingRatio = "dynamic_thresholding_ratio"
        case sampleMaxValue = "sample_max_value"
        case timestepSpacing = "timestep_spacing"
        case rescaleBetasZeroSnr = "rescale_betas_zero_snr"
        case className = "_class_name"
        case diffusersVersion = "_diffusers_version"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        numTrainTimesteps = try c.field(.numTrainTimesteps, default: numTrainTimesteps)
        betaStart = try c.field(.betaStart, default: betaStart)
        betaEnd = try c.field(.betaEnd, default: betaEnd)
        betaSchedule = try c.choice(.betaSchedule, default: betaSchedule)
        // trained_betas is the one field diffusers configs routinely write as null (= not given).
        if c.contains(.trainedBetas), try !c.decodeNil(forKey: .trainedBetas) {
            trainedBetas = try c.field(.trainedBetas, default: [Double]())
        }
        clipSample = try c.field(.clipSample, default: clipSample)
        clipSampleRange = try c.field(.clipSampleRange, default: clipSampleRange)
        setAlphaToOne = try c.field(.setAlphaToOne, default: setAlphaToOne)
        stepsOffset = try c.field(.stepsOffset, default: stepsOffset)
        predictionType = try c.choice(.predictionType, default: predictionType)
        thresholding = try c.field(.thresholding, default: thresholding)
        dynamicThresholdingRatio = try c.field(.dynamicThresholdingRatio, default: dynamicThresholdingRatio)
        sampleMaxValue = try c.field(.sampleMaxValue, default: sampleMaxValue)
        timestepSpacing = try c.choice(.timestepSpacing, default: timestepSpacing)
        rescaleBetasZeroSnr = try c.field(.rescaleBetasZeroSnr, default: rescaleBetasZeroSnr)
        try validate()
    }

    /// Writes a `DDIMScheduler` config in diffusers' format (what `save_pretrained` writes).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode("DDIMScheduler", forKey: .className)
        try c.encode("0.35.2", forKey: .diffusersVersion)
        try c.encode(numTrainTimesteps, forKey: .numTrainTimesteps)
        try c.encode(betaStart, forKey: .betaStart)
        try c.encode(betaEnd, forKey: .betaEnd)
        try c.encode(betaSchedule, forKey: .betaSchedule)
        if let trainedBetas { try c.encode(trainedBetas, forKey: .trainedBetas) } else { try c.encodeNil(forKey: .trainedBetas) }
        try c.encode(clipSample, forKey: .clipSample)
        try c.encode(clipSampleRange, forKey: .clipSampleRange)
        try c.encode(setAlphaToOne, forKey: .setAlphaToOne)
        try c.encode(stepsOffset, forKey: .stepsOffset)
        try c.encode(predictionType, forKey: .predictionType)
        try c.encode(thresholding, forKey: .thresholding)
        try c.encode(dynamicThresholdingRatio, forKey: .dynamicThresholdingRatio)
        try c.encode(sampleMaxValue, forKey: .sampleMaxValue)
        try c.encode(timestepSpacing, forKey: .timestepSpacing)
        try c.encode(rescaleBetasZeroSnr, forKey: .rescaleBetasZeroSnr)
    }

    /// Checks values diffusers would only trip over later (an index error mid-sampling) or not at all.
    public func validate() throws {
        func fail(_ key: CodingKeys, _ message: String) -> SchedulerError {
            .invalidConfigField(field: key.rawValue, message: message)
        }
        guard numTrainTimesteps >= 1 else { throw fail(.numTrainTimesteps, "must be at least 1, found \(numTrainTimesteps)") }
        if let trainedBetas {
            guard trainedBetas.count == numTrainTimesteps else {
                throw fail(.trainedBetas, "has \(trainedBetas.count) values but num_train_timesteps is \(numTrainTimesteps)")
            }
            guard trainedBetas.allSatisfy({ $0.isFinite }) else { throw fail(.trainedBetas, "contains a non-finite value") }
        } else {
            guard betaStart.isFinite, betaStart >= 0 else { throw fail(.betaStart, "must be a finite number >= 0, found \(betaStart)") }
            guard betaEnd.isFinite, betaEnd >= 0 else { throw fail(.betaEnd, "must be a finite number >= 0, found \(betaEnd)") }
        }
        guard clipSampleRange.isFinite, clipSampleRange > 0 else {
            throw fail(.clipSampleRange, "must be a positive number, found \(clipSampleRange)")
        }
        guard stepsOffset >= 0 else { throw fail(.stepsOffset, "must be >= 0, found \(stepsOffset)") }
        guard dynamicThresholdingRatio >= 0, dynamicThresholdingRatio <= 1 else {
            throw fail(.dynamicThresholdingRatio, "must be a quantile in [0, 1], found \(dynamicThresholdingRatio)")
        }
        guard sampleMaxValue.isFinite, sampleMaxValue > 0 else {
            throw fail(.sampleMaxValue, "must be a positive number, found \(sampleMaxValue)")
        }
    }

    /// Decodes a `scheduler_config.json`; errors name the file.
    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw SchedulerError.configFile(path: url.path, message: "cannot read the file (\(error.localizedDescription))")
        }
        do {
            self = try JSONDecoder().decode(DDIMSchedulerConfig.self, from: data)
        } catch let error as SchedulerError {
            throw SchedulerError.configFile(path: url.path, message: error.description)
        } catch {
            throw SchedulerError.configFile(path: url.path, message: "not a JSON object (\(error))")
        }
    }
}

extension KeyedDecodingContainer where Key == DDIMSchedulerConfig.CodingKeys {
    /// The value at `key`, `fallback` when the key is absent; a null or mistyped value is an error
    /// naming the field (diffusers would pass a null straight through and change behaviour).
    fileprivate func field<T: Decodable>(_ key: Key, default fallback: T) throws -> T {
        guard contains(key) else { return fallback }
        if try decodeNil(forKey: key) {
            throw SchedulerError.invalidConfigField(field: key.rawValue, message: "is null; expected \(Self.typeName(T.self))")
        }
        if T.self == Int.self, let number = try? decode(Double.self, forKey: key) {
            // JSON writers may spell an integer as 1000.0.
            guard number.rounded() == number, Swift.abs(number) < 1e15 else {
                throw SchedulerError.invalidConfigField(field: key.rawValue, message: "expected an integer, found \(number)")
            }
            return Int(number) as! T
        }
        do { return try decode(T.self, forKey: key) } catch {
            throw SchedulerError.invalidConfigField(field: key.rawValue, message: "expected \(Self.typeName(T.self))")
        }
    }

    /// A string field that must be one of an enum's raw values.
    fileprivate func choice<T: RawRepresentable & CaseIterable>(_ key: Key, default fallback: T) throws -> T
        where T.RawValue == String {
        let raw = try field(key, default: fallback.rawValue)
        guard let value = T(rawValue: raw) else {
            let supported = T.allCases.map { "'\($0.rawValue)'" }.joined(separator: ", ")
            throw SchedulerError.invalidConfigField(
                field: key.rawValue, message: "'\(raw)' is not supported by DDIMScheduler (expected one of \(supported))")
        }
        return value
    }

    private static func typeName<T>(_ type: T.Type) -> String {
        switch type {
        case is Int.Type: return "an integer"
        case is Double.Type: return "a number"
        case is Bool.Type: return "true or false"
        case is String.Type: return "a string"
        case is [Double].Type: return "an array of numbers"
        default: return "\(type)"
        }
    }
}
