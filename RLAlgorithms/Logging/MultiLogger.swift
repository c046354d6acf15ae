import TensorKit

// Sends every call to several loggers, in order.
//
//   trainer.logger = MultiLogger([try TensorBoardWriter(directory: runDir),
//                                 try JSONLinesLogger(directory: runDir)])

/// A `DDPOLogger` that forwards each call to each of `loggers`, in order.
public final class MultiLogger: DDPOLogger {
    public var loggers: [DDPOLogger]

    public init(_ loggers: [DDPOLogger]) {
        self.loggers = loggers
    }

    public func log(_ values: [String: Double], step: Int) {
        for logger in loggers { logger.log(values, step: step) }
    }

    public func logImages(_ images: [(caption: String, image: RGBImage)], step: Int) {
        for logger in loggers { logger.logImages(images, step: step) }
    }
}
