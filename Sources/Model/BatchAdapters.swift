import BCCore
import BCKernels

/// Which serving adapter (and scale) each row of a batch uses: rows grouped by
/// (adapter, scale) — S-LoRA / Punica's segments. Rows of no group use the base model.
///
/// The serving forward runs each projection as ONE base product over all rows, then
/// `apply` adds every group's low-rank updates to its rows (`LowRankUpdate.row`), so a
/// row's output depends only on its own input and adapter: batch invariance holds in a
/// batch mixing any adapters and none.
package struct BatchAdapters {
    package struct Group {
        package let adapter: ServingAdapter
        /// The adapter's weights, held for the pass (reloaded if they were evicted).
        package let weights: ServingAdapter.Weights
        package let scale: Float
        /// Batch rows, ascending.
        package var rows: [Int]
    }

    package private(set) var groups: [Group] = []
    /// Rows with an adapter, over all groups.
    package private(set) var adaptedRows = 0
    /// Rows of the batch (`perRow.count`).
    package let rowCount: Int

    /// Groups `perRow` (one entry per batch row; nil = the base model). Throws
    /// `.invalidArgument` for an adapter loaded for another model or a non-finite scale;
    /// an evicted adapter is read again (`ServingAdapter.weights`, its errors).
    package init(perRow: [(adapter: ServingAdapter, scale: Float)?], model: LanguageModel) throws {
        rowCount = perRow.count
        var index: [UInt64: Int] = [:]
        for (i, choice) in perRow.enumerated() {
            guard let (adapter, scale) = choice else { continue }
            guard adapter.model === model else { throw BatchCoreError.invalid("the adapter was loaded for another model") }
            guard scale.isFinite else { throw BatchCoreError.invalid("adapter scale \(scale) is not finite") }
            let key = adapter.cacheKey(scale: scale)
            if let g = index[key], groups[g].adapter === adapter, groups[g].scale.bitPattern == scale.bitPattern {
                groups[g].rows.append(i)
            } else if index[key] == nil {
                index[key] = groups.count
                groups.append(Group(adapter: adapter, weights: try adapter.weights(), scale: scale, rows: [i]))
            } else {
                // A key collision (never for distinct ids in practice): a group of its own.
                groups.append(Group(adapter: adapter, weights: try adapter.weights(), scale: scale, rows: [i]))
            }
            adaptedRows += 1
        }
    }

    package var isEmpty: Bool { adaptedRows == 0 }

    /// y[i] += Σ parts of layer `layer`, projection `projection`: scale_g · s_part ·
    /// B·A·x[i] on the part's rows of y, for every row i of every group. x: [T × ldx]
    /// (the projection's input), y: [T × ldy] (its output, the base product already in
    /// it). One parallel job; an item is up to `rowsPerItem` rows of ONE group, run one
    /// after the other on one thread, so the adapter's A and Bᵀ come from memory once per
    /// item and from cache for its other rows (with many adapters in a step, reading the
    /// adapters is most of the work). Each row is still computed alone (`LowRankUpdate.row`).
    func apply(layer: Int, _ projection: AdapterProjection, x: UnsafePointer<Float>, ldx: Int,
               y: UnsafeMutablePointer<Float>, ldy: Int) {
        if adaptedRows == 0 { return }
        // (group, rows[lo ..< hi]) work items.
        var items: [(group: Int, lo: Int, hi: Int)] = []
        var maxRank = 1
        for (g, group) in groups.enumerated() {
            let parts = group.weights.parts[layer][projection.rawValue]
            if parts.isEmpty { continue }
            for p in parts { maxRank = max(maxRank, p.rank) }
            for lo in stride(from: 0, to: group.rows.count, by: Self.rowsPerItem) {
                items.append((g, lo, min(group.rows.count, lo + Self.rowsPerItem)))
            }
        }
        if items.isEmpty { return }
        let groups = groups
        Parallel.forEach(items.count) { k in
            let (g, lo, hi) = items[k]
            let group = groups[g]
            withUnsafeTemporaryAllocation(of: Float.self, capacity: maxRank) { u in
                for i in group.rows[lo..<hi] {
                    for p in group.weights.parts[layer][projection.rawValue] {
                        LowRankUpdate.row(x: x + i * ldx, a: p.a, bT: p.bT, rank: p.rank, cols: p.cols, rows: p.rows,
                                          scale: group.scale * p.scale, y: y + i * ldy + p.firstRow, u: u.baseAddress!)
                    }
                }
            }
        }
    }

    /// Rows of one group per work item of `apply`.
    static let rowsPerItem = 8
}
