import XCTest
@testable import TensorKit

/// The small-upload ring against a fake device that runs queued copies only when the host waits on
/// an event (or at the end), reading the pinned slot at that moment, as a real copy engine would.
/// Each test's expected bytes are what the caller asked to upload.
final class CUDAUploadRingTests: XCTestCase {
    final class FakeStream {
        enum Op { case copy(UInt64, UnsafeRawPointer, Int), record(Int) }
        var queue: [Op] = []
        var memory: [UInt64: [UInt8]] = [:]
        var events = 0
        var waits: [Int] = []
        var pinned: [UnsafeMutableRawPointer] = []

        /// Runs queued work up to and including the last record of `event` (everything if nil).
        func run(through event: Int?) {
            let end: Int
            if let event {
                guard let last = queue.lastIndex(where: { if case .record(event) = $0 { return true } else { return false } }) else { return }
                end = last + 1
            } else {
                end = queue.count
            }
            for op in queue[..<end] {
                if case .copy(let destination, let source, let n) = op {
                    memory[destination] = Array(UnsafeRawBufferPointer(start: source, count: n))
                }
            }
            queue.removeFirst(end)
        }

        var driver: CUDAUploadRingDriver {
            CUDAUploadRingDriver(
                allocatePinned: { [unowned self] bytes in
                    let p = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 16)
                    pinned.append(p)
                    return p
                },
                createEvent: { [unowned self] in
                    events += 1
                    return UnsafeMutableRawPointer(bitPattern: events)
                },
                copyAsync: { [unowned self] destination, source, n in
                    queue.append(.copy(destination, source, n))
                    return 0
                },
                record: { [unowned self] event in
                    queue.append(.record(Int(bitPattern: event)))
                    return 0
                },
                wait: { [unowned self] event in
                    waits.append(Int(bitPattern: event))
                    run(through: Int(bitPattern: event))
                    return 0
                })
        }

        deinit { pinned.forEach { $0.deallocate() } }
    }

    func testEveryUploadArrivesIntactThoughTheCallerReusesItsBufferAndTheRingWraps() throws {
        let device = FakeStream()
        let ring = try XCTUnwrap(CUDAUploadRing(slots: 3, slotBytes: 16, driver: device.driver))
        var expected: [UInt64: [UInt8]] = [:]
        var buffer = [UInt8](repeating: 0, count: 16)
        for i in 0..<10 {
            let n = 1 + (i * 7) % 16
            for j in 0..<n { buffer[j] = UInt8(truncatingIfNeeded: 31 * i + j) }
            let address = UInt64(0x1000 * (i + 1))
            expected[address] = Array(buffer[..<n])
            buffer.withUnsafeBytes { ring.upload(from: $0.baseAddress!, to: address, n) }
            for j in 0..<16 { buffer[j] = 0xEE }  // the caller's buffer is free once upload returns
        }
        device.run(through: nil)
        XCTAssertEqual(device.memory, expected)
        // The host waited only when it came back to a slot: never for the first three uploads, then
        // once per upload, each time on the slot used three uploads earlier (events 1, 2, 3, 1, ...).
        XCTAssertEqual(device.waits, [1, 2, 3, 1, 2, 3, 1])
    }

    func testUploadsDoNotWaitWhileSlotsAreFree() throws {
        let device = FakeStream()
        let ring = try XCTUnwrap(CUDAUploadRing(slots: 4, slotBytes: 8, driver: device.driver))
        let value: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8]
        for i in 0..<4 { value.withUnsafeBytes { ring.upload(from: $0.baseAddress!, to: UInt64(i), 8) } }
        XCTAssertEqual(device.waits, [])
        XCTAssertTrue(device.memory.isEmpty, "nothing has run on the device yet")
        device.run(through: nil)
        XCTAssertEqual(device.memory, [0: value, 1: value, 2: value, 3: value])
    }

    func testNoRingWithoutPinnedMemoryOrEvents() {
        let device = FakeStream()
        var noMemory = device.driver
        noMemory.allocatePinned = { _ in nil }
        XCTAssertNil(CUDAUploadRing(slots: 2, slotBytes: 8, driver: noMemory))
        var noEvents = device.driver
        noEvents.createEvent = { nil }
        XCTAssertNil(CUDAUploadRing(slots: 2, slotBytes: 8, driver: noEvents))
    }
}
