import Foundation
import XCTest
@testable import DDPOApp
import RLAlgorithms

/// `ddpo train`'s background sample writer: the files and the TensorBoard event it leaves, and a
/// write failure reported by the next call rather than lost.
final class SampleWriterTests: XCTestCase {
    /// Two 3×2 images with pixel values 0…17 and 100…117, as RGB bytes set by hand.
    let images = [(caption: "a cat | 0.5", image: RGBImage(width: 3, height: 2, pixels: (0..<18).map(UInt8.init))),
                  (caption: "a dog | 0.25", image: RGBImage(width: 3, height: 2, pixels: (100..<118).map(UInt8.init)))]

    func testWritesEachImageTheGridAndOneTensorBoardEvent() throws {
        let dir = try DDPOProcess.temporaryDirectory()
        let tensorBoard = try TensorBoardWriter(directory: dir.appendingPathComponent("tb"), hostname: "h")
        let writer = SampleWriter(tensorBoard: tensorBoard)
        try writer.submit(images, names: ["00_a-cat.png", "01_a-dog.png"], folder: dir, step: 7)
        try writer.finish()
        tensorBoard.close()

        for (item, name) in zip(images, ["00_a-cat.png", "01_a-dog.png"]) {
            XCTAssertEqual(try RGBImage(contentsOf: dir.appendingPathComponent(name).path), item.image, name)
        }
        let grid = try RGBImage(contentsOf: dir.appendingPathComponent("grid.png").path)
        XCTAssertEqual(grid, ImageGrid.make(images.map(\.image), columns: 2))
        // The file-version record, then one image event: the grid and both images, PNG-encoded.
        let records = try TensorBoardRecords.read(contentsOf: tensorBoard.url)
        XCTAssertEqual(records.count, 2)
        let event = records[1]
        let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        var count = 0, rest = event[...]
        while let range = rest.firstRange(of: signature) { count += 1; rest = rest[range.upperBound...] }
        XCTAssertEqual(count, 3)
        for tag in ["samples", "a cat | 0.5", "a dog | 0.25"] {
            XCTAssertNotNil(event.firstRange(of: Array(tag.utf8)), tag)
        }
    }

    func testAFailedWriteIsReportedByTheNextCallOnce() throws {
        let missing = try DDPOProcess.temporaryDirectory().appendingPathComponent("no-such-folder")
        let writer = SampleWriter(tensorBoard: nil)
        try writer.submit(images, names: ["00.png", "01.png"], folder: missing, step: 0)
        XCTAssertThrowsError(try writer.finish()) { error in
            XCTAssertTrue("\(error)".contains("grid.png"), "\(error)")
        }
        XCTAssertNoThrow(try writer.finish())
        // A failure in the background is also what the next submit reports.
        try writer.submit(images, names: ["00.png", "01.png"], folder: missing, step: 1)
        XCTAssertThrowsError(try writer.submit(images, names: ["00.png", "01.png"], folder: missing, step: 2))
        XCTAssertNoThrow(try writer.finish())    // the refused batch was never queued
    }
}
