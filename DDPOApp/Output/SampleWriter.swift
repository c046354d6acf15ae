import Foundation
import RLAlgorithms

/// Writes each epoch's sample images (one PNG per captioned sample, `grid.png`, and the TensorBoard
/// image summary) on a background queue, so PNG encoding — about 0.1 s per 512² image on one core,
/// 13 images' worth per epoch — overlaps the epoch's training instead of delaying it. One epoch's
/// images are in flight at a time: `submit` first waits for the previous batch, which bounds the
/// memory held. A failure to write a file is rethrown by the next `submit` or by `finish()`;
/// TensorBoard's errors go to its `onError` (a warning), as its logger calls do.
final class SampleWriter: @unchecked Sendable {
    private let queue = DispatchQueue(label: "ddpo.sample-writer")
    private let tensorBoard: TensorBoardWriter?
    private var failure: Error?     // touched on `queue` only

    init(tensorBoard: TensorBoardWriter?) { self.tensorBoard = tensorBoard }

    /// Queues `captioned` for `folder` (which must exist): files `<i>_<slug>.png` named by `names`,
    /// `grid.png` (up to 8 columns), and one TensorBoard event at `step` with the grid as "samples"
    /// followed by each image under its caption.
    func submit(_ captioned: [(caption: String, image: RGBImage)], names: [String], folder: URL, step: Int) throws {
        try finish()
        queue.async { [self] in
            do {
                let grid = ImageGrid.make(captioned.map(\.image), columns: min(8, captioned.count))
                let gridPNG = try grid.encodePNG()
                try Data(gridPNG).write(to: folder.appendingPathComponent("grid.png"), options: .atomic)
                var summary = [TensorBoardImage(tag: "samples", height: grid.height, width: grid.width, encoded: gridPNG)]
                for (item, name) in zip(captioned, names) {
                    let png = try item.image.encodePNG()
                    try Data(png).write(to: folder.appendingPathComponent(name), options: .atomic)
                    summary.append(TensorBoardImage(tag: item.caption, height: item.image.height, width: item.image.width, encoded: png))
                }
                if let tensorBoard {
                    do { try tensorBoard.writeImages(summary, step: step) } catch { tensorBoard.onError(error) }
                }
            } catch {
                failure = error
            }
        }
    }

    /// Waits for the queued images; rethrows (once) a failure to write them.
    func finish() throws {
        try queue.sync {
            if let error = failure {
                failure = nil
                throw error
            }
        }
    }
}
