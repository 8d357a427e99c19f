import BCCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Grow-only float memory for the activations of forward passes, kept between passes:
/// a fresh allocation per step would page-fault and zero its memory again every step
/// (it cost ~10% of an engine step). `ForwardActivations` carves its named buffers out
/// of it. Contents are NOT cleared between uses.
final class ForwardWorkspace: @unchecked Sendable {
    private var pointer: UnsafeMutablePointer<Float>?
    private var capacity = 0

    /// The workspace's memory with room for at least `count` floats (64-byte aligned).
    /// Growing replaces the memory (earlier contents are lost); it never shrinks.
    func floats(_ count: Int) throws -> UnsafeMutablePointer<Float> {
        if let pointer, capacity >= count { return pointer }
        let (grown, overflow) = capacity.multipliedReportingOverflow(by: 3)
        let size = max(count, overflow ? count : grown / 2, 16)
        let p = try Memory.allocateFloats(size, fill: 0)
        free(pointer)
        pointer = p
        capacity = size
        return p
    }

    deinit { free(pointer) }
}

/// Activation sets handed to concurrent serving passes of one shared model (each caller
/// takes one for the duration of its pass). They reuse one set of buffers for every
/// layer (`ForwardActivations(keepingLayers: false)`).
final class ForwardWorkspacePool: Sendable {
    private let spare = Mutex<[ForwardActivations]>([])
    /// At most this many idle sets are kept.
    private let keep = 4

    func take() -> ForwardActivations {
        spare.withLock { $0.popLast() } ?? ForwardActivations(keepingLayers: false)
    }

    func give(_ a: ForwardActivations) {
        spare.withLock { if $0.count < keep { $0.append(a) } }
    }
}
