import Foundation
import XCTest
import RLAlgorithms

/// The `shape_size` reward on pictures whose values are worked out by hand.
final class ShapeRewardTests: XCTestCase {
    /// A [1, 3, size, size] picture of `background` with the pixels `painted` ((x, y) → RGB bytes).
    func picture(size: Int = 8, background: [Double], painted: [[Int]: [Double]]) -> Tensor {
        var values = [Double](repeating: 0, count: 3 * size * size)
        for c in 0..<3 {
            for y in 0..<size {
                for x in 0..<size { values[(c * size + y) * size + x] = (painted[[x, y]] ?? background)[c] / 255 }
            }
        }
        return Tensor(values, shape: [1, 3, size, size])
    }

    let gray: [Double] = [128, 128, 128], red: [Double] = [220, 30, 30]

    func testPixelsNearerTheShapeColourThanTheBackgroundCount() throws {
        // "a red circle": red (220, 30, 30) on the default gray (128, 128, 128), 8×8 = 64 pixels.
        // A 4×4 red block: 16 pixels. (175, 79, 79): 45² + 2·49² = 6827 from red, 47² + 2·49² = 7011
        // from gray, counts. (174, 79, 79), the midpoint: 46² + 2·49² from both, a tie, does not.
        // White: 35² + 2·225² = 102475 from red, 3·127² = 48387 from gray, does not. 17 / 64.
        var painted: [[Int]: [Double]] = [:]
        for y in 2..<6 { for x in 2..<6 { painted[[x, y]] = red } }
        painted[[6, 3]] = [175, 79, 79]
        painted[[1, 3]] = [174, 79, 79]
        painted[[3, 7]] = [255, 255, 255]
        let out = try ShapeSizeReward()(images: picture(background: gray, painted: painted),
                                        prompts: ["a red circle"], metadata: [[:]])
        XCTAssertEqual(out.rewards, [17.0 / 64])
        XCTAssertEqual(ShapeSizeReward().name, "shape_size")
    }

    func testNamedBackground() throws {
        // "a blue square on a yellow background": a 3×3 blue block, 9 pixels; a quarter-way blend
        // (191, 182, 80) is nearer yellow (245, 220, 30) than blue (30, 70, 230). 9 / 64.
        var painted: [[Int]: [Double]] = [[5, 5]: [191, 182, 80]]
        for y in 3..<6 { for x in 2..<5 { painted[[x, y]] = [30, 70, 230] } }
        let out = try ShapeSizeReward()(images: picture(background: [245, 220, 30], painted: painted),
                                        prompts: ["a blue square on a yellow background"], metadata: [[:]])
        XCTAssertEqual(out.rewards, [9.0 / 64])
    }

    func testAPictureWhoseBackgroundIsNotTheCaptionsScoresZero() throws {
        // All red: the corners read red, not the caption's gray. The same red block on purple: the
        // corners read purple. Both 0, though every pixel, or 16, is nearer red than gray.
        var block: [[Int]: [Double]] = [:]
        for y in 2..<6 { for x in 2..<6 { block[[x, y]] = red } }
        let images = Tensor.concat([picture(background: red, painted: [:]),
                                    picture(background: [140, 50, 190], painted: block)], axis: 0)
        let out = try ShapeSizeReward()(images: images, prompts: ["a red circle", "a red circle"], metadata: [[:], [:]])
        XCTAssertEqual(out.rewards, [0, 0])
    }

    func testADrawnShapeScoresItsArea() throws {
        // 32×32, purple background, a green 20×20 square (rows and columns 6..<26): 400 / 1024.
        var painted: [[Int]: [Double]] = [:]
        for y in 6..<26 { for x in 6..<26 { painted[[x, y]] = [30, 170, 50] } }
        let out = try ShapeSizeReward()(images: picture(size: 32, background: [140, 50, 190], painted: painted),
                                        prompts: ["a green square on a purple background"], metadata: [[:]])
        XCTAssertEqual(out.rewards, [400.0 / 1024])
    }

    func testCaptionsOutsideTheGrammarAreErrors() {
        XCTAssertEqual(ShapeSizeReward.colors(of: "A Red Circle")?.background.name, "gray")
        XCTAssertEqual(ShapeSizeReward.colors(of: "a red circle on a blue background")?.background.name, "blue")
        XCTAssertNil(ShapeSizeReward.colors(of: "a cat"))
        XCTAssertNil(ShapeSizeReward.colors(of: "a red blob"))
        XCTAssertNil(ShapeSizeReward.colors(of: "a red circle on a red background"))   // nothing to tell apart
        XCTAssertNil(ShapeSizeReward.colors(of: "a red circle on a pink background"))
        XCTAssertThrowsError(try ShapeSizeReward()(images: picture(background: gray, painted: [:]), prompts: ["a cat"], metadata: [[:]])) { error in
            XCTAssertTrue("\(error)".contains("\"a cat\" is not a caption of the shapes grammar"), "\(error)")
        }
        XCTAssertThrowsError(try ShapeSizeReward()(images: Tensor.zeros([1, 3, 4, 4]), prompts: ["a red circle"], metadata: [[:]])) { error in
            XCTAssertTrue("\(error)".contains("at least 8×8"), "\(error)")
        }
    }
}
