import BCCore
#if canImport(Glibc)
import Glibc
#endif

/// KIVI storage: a sequence's float32 rows that are not quantized yet (row 0 = the
/// sequence's first unquantized position, `KVSequence.quantizedBlocks · blockSize`).
/// Per layer group one buffer [storing layer li][K, V][capacity rows][kvDim] float32
/// (nil while the capacity is 0). Owns the buffers (freed at deinit). The budget
/// charge (capacity × `rowBytes`) is kept by the cache.
final class KIVIResidual {
    /// Storing layers per layer group.
    let layersPerGroup: [Int]
    let kvDim: Int
    private(set) var buffers: [UnsafeMutablePointer<Float>?]
    /// Rows each plane holds.
    private(set) var capacity = 0

    init(layersPerGroup: [Int], kvDim: Int) {
        self.layersPerGroup = layersPerGroup
        self.kvDim = kvDim
        buffers = Array(repeating: nil, count: layersPerGroup.count)
    }
    deinit { for b in buffers { free(b) } }

    /// Bytes of one residual row over all groups (K and V of every storing layer).
    static func rowBytes(layersPerGroup: [Int], kvDim: Int) -> Int { layersPerGroup.reduce(0) { $0 + 2 * $1 } * kvDim * 4 }

    /// Buffers for `rows` rows, not installed yet (uninitialized floats); throws
    /// `.outOfMemory` (having allocated nothing) when the host allocator fails.
    static func allocate(rows: Int, layersPerGroup: [Int], kvDim: Int) throws -> [UnsafeMutablePointer<Float>?] {
        var fresh: [UnsafeMutablePointer<Float>?] = []
        guard rows > 0 else { return Array(repeating: nil, count: layersPerGroup.count) }
        for layers in layersPerGroup {
            let (floats, overflow) = (2 * layers * rows).multipliedReportingOverflow(by: kvDim)
            guard !overflow, !Memory.injectedFailure(floats * 4), let p = malloc(max(4, floats * 4))?.assumingMemoryBound(to: Float.self) else {
                for f in fresh { free(f) }
                throw BatchCoreError(.outOfMemory, "cannot allocate a KIVI residual buffer of \(rows) rows")
            }
            fresh.append(p)
        }
        return fresh
    }

    /// Installs `fresh` (from `allocate(rows:...)`, now owned here) as buffers of `rows`
    /// rows, copying the first `keep` rows of the current ones, and frees the old.
    func install(_ fresh: [UnsafeMutablePointer<Float>?], rows: Int, keep: Int) {
        let n = max(0, min(keep, rows, capacity))
        if n > 0 {
            for (g, layers) in layersPerGroup.enumerated() {
                guard let old = buffers[g], let new = fresh[g] else { continue }
                for pl in 0..<2 * layers { (new + pl * rows * kvDim).update(from: old + pl * capacity * kvDim, count: n * kvDim) }
            }
        }
        for b in buffers { free(b) }
        buffers = fresh
        capacity = rows
    }

    /// The rows of one layer's keys or values in group g (layer index li in the group).
    @inline(__always)
    func plane(_ g: Int, _ li: Int, value: Bool) -> UnsafeMutablePointer<Float> {
        buffers[g]! + (li * 2 + (value ? 1 : 0)) * capacity * kvDim
    }

    /// Moves rows drop..<drop + remain to the front of every plane.
    func dropFront(_ drop: Int, remain: Int) {
        guard drop > 0, remain > 0 else { return }
        for (g, layers) in layersPerGroup.enumerated() {
            guard let base = buffers[g] else { continue }
            for pl in 0..<2 * layers {
                let plane = base + pl * capacity * kvDim
                memmove(plane, plane + drop * kvDim, remain * kvDim * 4)
            }
        }
    }
}
