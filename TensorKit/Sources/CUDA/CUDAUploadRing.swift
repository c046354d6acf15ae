import Foundation

// Small host-to-device copies without waiting for the device.
//
// An upload through the shared staging buffer has to wait for the stream to drain before the
// buffer can be reused (`CUDABackend.upload`). For a large upload that costs nothing. A small one is
// a different matter: the scheduler's per-step coefficients, a timestep embedding, a step's noise.
// There the wait stops the host until every kernel queued before it has run, and the device then
// idles while the host queues the next ones. A DDIM sampling step made about seven such uploads.
//
// The ring gives each small upload a slot of pinned memory of its own. The bytes are copied into
// the slot at once (the caller's buffer is free when `upload` returns), the copy is queued on the
// stream, and an event is recorded after it. The host waits only when it comes back round to a
// slot whose copy the device has not reached yet, and then only for that copy.

/// What the ring needs from the driver (the real one in `CUDADeviceContext.uploadRing`, a fake in tests).
struct CUDAUploadRingDriver {
    /// Pinned host memory of `byteCount` bytes.
    var allocatePinned: (Int) -> UnsafeMutableRawPointer?
    /// A new event; nil on failure.
    var createEvent: () -> CUhandle?
    /// Queues the copy of `byteCount` bytes from pinned `source` to device `destination`; 0 on success.
    var copyAsync: (_ destination: UInt64, _ source: UnsafeRawPointer, _ byteCount: Int) -> CUresult
    /// Records the event after the work queued so far; 0 on success.
    var record: (CUhandle) -> CUresult
    /// Waits until the work before the event's last record has run; 0 on success.
    var wait: (CUhandle) -> CUresult
}

/// Fixed-size slots of pinned memory, each with an event, used round-robin.
final class CUDAUploadRing: @unchecked Sendable {
    /// The largest upload that takes a slot.
    let slotBytes: Int
    private let slots: [(memory: UnsafeMutableRawPointer, event: CUhandle)]
    private var inFlight: [Bool]
    private var next = 0
    private let driver: CUDAUploadRingDriver
    private let lock = NSLock()

    /// nil when the pinned memory or an event cannot be had (uploads then take the waiting path).
    init?(slots count: Int, slotBytes: Int, driver: CUDAUploadRingDriver) {
        precondition(count >= 1 && slotBytes >= 1)
        guard let memory = driver.allocatePinned(count * slotBytes) else { return nil }
        var slots: [(UnsafeMutableRawPointer, CUhandle)] = []
        for i in 0..<count {
            guard let event = driver.createEvent() else { return nil }
            slots.append((memory + i * slotBytes, event))
        }
        self.slots = slots
        self.slotBytes = slotBytes
        self.driver = driver
        inFlight = Array(repeating: false, count: count)
    }

    /// Copies `byteCount` (≤ `slotBytes`) bytes from `source` to device address `destination`,
    /// ordered on the stream before anything queued after it.
    func upload(from source: UnsafeRawPointer, to destination: UInt64, _ byteCount: Int) {
        precondition(byteCount <= slotBytes, "upload ring: \(byteCount) bytes exceed a slot's \(slotBytes)")
        lock.lock(); defer { lock.unlock() }
        let i = next
        next = (next + 1) % slots.count
        let slot = slots[i]
        if inFlight[i] {
            let s = driver.wait(slot.event)
            precondition(s == 0, "upload ring: waiting for an earlier upload failed (a queued kernel may have failed), CUDA error \(s)")
        }
        memcpy(slot.memory, source, byteCount)
        var s = driver.copyAsync(destination, UnsafeRawPointer(slot.memory), byteCount)
        precondition(s == 0, "upload ring: cuMemcpyHtoDAsync of \(byteCount) bytes failed, CUDA error \(s)")
        s = driver.record(slot.event)
        precondition(s == 0, "upload ring: cuEventRecord failed, CUDA error \(s)")
        inFlight[i] = true
    }
}
