import Foundation

/// Errors from reading a scheduler config or stepping a `DDIMScheduler`. Each message names the
/// config field, file or argument involved and what was expected.
public enum SchedulerError: Error, Equatable, CustomStringConvertible, LocalizedError {
    /// A config field holds a value of the wrong type, a null, or a value DDIM does not implement.
    case invalidConfigField(field: String, message: String)
    /// A config file could not be read or parsed; `message` carries the cause.
    case configFile(path: String, message: String)
    /// `step` was called before `setTimesteps`.
    case timestepsNotSet
    /// `setTimesteps` got a step count it cannot honour.
    case invalidInferenceSteps(requested: Int, numTrainTimesteps: Int, reason: String)
    /// A timestep outside `0..<numTrainTimesteps`.
    case timestepOutOfRange(timestep: Int, numTrainTimesteps: Int)
    /// A tensor argument has the wrong shape, dtype or device.
    case invalidArgument(name: String, message: String)
    /// The DDPO log-probability does not exist for this call (eta <= 0, or a zero noise level).
    case undefinedLogProbability(message: String)

    public var description: String {
        switch self {
        case let .invalidConfigField(field, message):
            return "scheduler config field '\(field)': \(message)"
        case let .configFile(path, message):
            return "scheduler config \(path): \(message)"
        case .timestepsNotSet:
            return "the number of inference steps is not set: call setTimesteps(_:) before step"
        case let .invalidInferenceSteps(requested, numTrain, reason):
            return "setTimesteps(\(requested)) with num_train_timesteps \(numTrain): \(reason)"
        case let .timestepOutOfRange(timestep, numTrain):
            return "timestep \(timestep) is outside 0..<\(numTrain) (num_train_timesteps)"
        case let .invalidArgument(name, message):
            return "argument '\(name)': \(message)"
        case let .undefinedLogProbability(message):
            return "log-probability undefined: \(message)"
        }
    }

    public var errorDescription: String? { description }
}
