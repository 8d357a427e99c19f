import BCCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Grow-only float buffers for one forward pass, kept between passes: a fresh
/// allocation per step would page-fault and zero its memory again every step (it cost
/// ~10% of an engine step). Contents are NOT cleared between uses.
final class ForwardWorkspace: @unchecked Sendable {
    private var buffers: [(pointer: UnsafeMutablePointer<Float>, count: Int)] = []

    /// Buffer number `slot` with room for at least `count` floats.
    func buffer(_ slot: Int, _ count: Int) throws -> UnsafeMutablePointer<Float> {
        while buffers.count <= slot { buffers.append((try Memory.allocateFloats(16, fill: 0), 16)) }
        if buffers[slot].count < count {
            let grown = max(count, buffers[slot].count * 3 / 2)
            let p = try Memory.allocateFloats(grown, fill: 0)
            free(buffers[slot].pointer)
            buffers[slot] = (p, grown)
        }
        return buffers[slot].pointer
    }

    deinit { for b in buffers { free(b.pointer) } }
}

/// Workspaces handed to concurrent forward passes of one shared model (each caller
/// takes one for the duration of its pass).
final class ForwardWorkspacePool: Sendable {
    private let spare = Mutex<[ForwardWorkspace]>([])
    /// At most this many idle workspaces are kept.
    private let keep = 4

    func take() -> ForwardWorkspace { spare.withLock { $0.popLast() } ?? ForwardWorkspace() }

    func give(_ w: ForwardWorkspace) {
        spare.withLock { if $0.count < keep { $0.append(w) } }
    }
}
