/// One sequence of a paged KV cache.
///
/// Block tables: per layer group, position p lives in block `tables[g][p / blockSize]`
/// (row p % blockSize); an entry is nil once a sliding window released the block (no
/// query can see it). Blocks may be shared with other sequences (forks, prefix reuse)
/// and are copied on the first write (`PagedKVCache.reserve`).
final class KVSequence {
    /// Committed positions.
    var length = 0
    /// Positions with room (blocks, residual rows): >= length.
    var reserved = 0
    /// The tokens of positions 0..<length (recorded before commit).
    var tokens: [Int32] = []
    var tables: [[BlockID?]]
    var adapter: UInt64 = 0
    /// Chained hashes of the sequence's full blocks, in order.
    var hashes: [UInt64] = []
    /// KIVI: blocks 0..<quantizedBlocks hold codes; later positions up to `reserved`
    /// live in `residual`.
    var quantizedBlocks = 0
    let residual: KIVIResidual

    init(layersPerGroup: [Int], kvDim: Int) {
        tables = Array(repeating: [], count: layersPerGroup.count)
        residual = KIVIResidual(layersPerGroup: layersPerGroup, kvDim: kvDim)
    }

    /// Whether the sequence holds nothing: no position and no block (a KIVI residual
    /// buffer left by a truncation holds no position).
    var isEmpty: Bool { length == 0 && tables.allSatisfy(\.isEmpty) }
}
