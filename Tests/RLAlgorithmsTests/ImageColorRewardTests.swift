import Foundation
import XCTest
import RLAlgorithms

/// `brightness`, `darkness` and `color:` rewards on images whose values are worked out by hand.
final class ImageColorRewardTests: XCTestCase {
    // Two 1×2 images: red + white pixels; black + (0.5, 0.5, 0.5). Planes are R, G, B.
    let images = Tensor([1, 1, 0, 1, 0, 1,
                         0, 0.5, 0, 0.5, 0, 0.5] as [Double], shape: [2, 3, 1, 2])

    func testBrightnessIsMeanLuma() throws {
        // Luma = 0.299 R + 0.587 G + 0.114 B; image 0 means (1, 0.5, 0.5), image 1 (0.25, 0.25, 0.25).
        let out = try BrightnessReward()(images: images, prompts: ["a", "b"], metadata: [[:], [:]])
        XCTAssertEqual(out.rewards[0], 0.299 + 0.5 * 0.587 + 0.5 * 0.114, accuracy: 1e-12)
        XCTAssertEqual(out.rewards[1], 0.25, accuracy: 1e-12)
        let dark = try BrightnessReward(inverted: true)(images: images, prompts: ["a", "b"], metadata: [[:], [:]])
        XCTAssertEqual(dark.rewards[1], 0.75, accuracy: 1e-12)
        XCTAssertEqual(BrightnessReward(inverted: true).name, "darkness")
    }

    func testColorRewardIsClosenessToTheTarget() throws {
        let red = try XCTUnwrap(ColorReward(spec: "#ff0000"))
        let out = try red(images: images, prompts: ["a", "b"], metadata: [[:], [:]])
        // Image 0: red pixel at distance 0, white at distance √2 → 1 and 1 − √2/√3.
        XCTAssertEqual(out.rewards[0], (1 + 1 - 2.0.squareRoot() / 3.0.squareRoot()) / 2, accuracy: 1e-12)
        // Image 1: black at distance 1, gray at √(0.25 + 0.25 + 0.25) = √0.75.
        XCTAssertEqual(out.rewards[1], (1 - 1 / 3.0.squareRoot() + 1 - 0.75.squareRoot() / 3.0.squareRoot()) / 2, accuracy: 1e-12)
        XCTAssertEqual(red.name, "color:#ff0000")
        let named = try XCTUnwrap(ColorReward(spec: "Red"))
        XCTAssertEqual(named.target.red, 220.0 / 255, accuracy: 1e-12)
        XCTAssertEqual(named.name, "color:red")
        XCTAssertNil(ColorReward(spec: "reddish"))
        XCTAssertNil(ColorReward(spec: "#ff00"))
    }

    func testWrongInputsAreErrors() {
        XCTAssertThrowsError(try BrightnessReward()(images: images, prompts: ["a"], metadata: [[:]]))
        XCTAssertThrowsError(try ColorReward(red: 0, green: 0, blue: 0)(images: Tensor.zeros([1, 4, 2, 2]), prompts: ["a"], metadata: [[:]]))
    }
}
