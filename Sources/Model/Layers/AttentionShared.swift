import BCCore
import BCKernels

extension Transformer {
    /// The splits of a shared run start..<end: consecutive ranges cut at multiples of
    /// `size` (`SharedPrefixAttention.splitPositions`; a function of the run alone).
    static func sharedSplits(_ start: Int, _ end: Int, size: Int) -> [Range<Int>] {
        let size = max(1, size)
        var splits: [Range<Int>] = []
        var a = start
        while a < end {
            let b = min(end, (a / size + 1) * size)
            splits.append(a..<b)
            a = b
        }
        return splits
    }

    /// `attend` when some views share runs of physical blocks (`SharedPrefixPlan`,
    /// Hydragen): for a row of a sharing view, attention over its positions lo..<visible
    /// is cut at its path's node boundaries into parts — each shared node's positions,
    /// then its own — and
    ///
    ///     1. each node's positions are cut into splits (`sharedSplits`, at multiples of `splitPositions`); each split's part
    ///        of ALL the node's rows (every query head of a kv head's group, every row of
    ///        every member view) is one `Attention.prefixTiled` job per (block of
    ///        `SharedPrefixAttention.rowsPerJob` rows, split, kv head): matrix-matrix products over key/value
    ///        tiles read once for all of them, online softmax; the row's own part is
    ///        `Attention.rows` on its view from its own start; each part yields its
    ///        normalized output and log-sum-exp (max, Σ exp) per head, into a slot (out:
    ///        d floats, stats: 2·heads floats);
    ///     2. the parts are merged in ascending position order with
    ///        `Attention.mergePartial`: softmax over the union, exact in real arithmetic.
    ///
    /// Rows of views that share nothing run `attend`'s per-row jobs unchanged (their bits
    /// do not change). A sharing row's result is a function of its own query, its
    /// keys/values and its path's cut points; the cut points depend on which sequences
    /// share its blocks in the pass, so its values may differ from the per-row path in the
    /// last bits (float rounding of the tiles' online softmax and of the merge, ~1e-7
    /// relative), never with the thread count or the blocks of rows (every part's bits
    /// are a function of the row's own query and range, see `Attention.prefixTiled`).
    /// Steps 1 and the unshared rows are ONE parallel job; step 2 is a second one.
    func attendShared(_ work: AttentionWork, plan: SharedPrefixPlan, counters: SharedPrefixAttention,
                      q: UnsafePointer<Float>, qStride: Int, out: UnsafeMutablePointer<Float>) {
        let c = config, d = c.embeddingDim, heads = c.headCount
        let group = c.headCount / c.kvHeadCount
        let rows = work.rows, window = work.window
        func range(_ row: AttentionRow) -> (lo: Int, visible: Int) {
            (window.map { max(0, row.position - $0 + 1) } ?? 0, row.position + 1)
        }

        // Slots: for each row of a sharing view, one per split of each node of its path, then
        // its own. slotOf[k]: row k's first slot (−1: the row's view shares nothing);
        // nodeRows[n]: (row, slot of the node's first split).
        let splits = plan.nodes.map { Self.sharedSplits($0.start, $0.end, size: counters.splitPositions) }
        var slotOf = [Int](repeating: -1, count: rows.count)
        var partsOf = [Int](repeating: 0, count: rows.count)
        var slots = 0
        var nodeRows = [[(row: Int, slot: Int)]](repeating: [], count: plan.nodes.count)
        var ownRows: [Int] = []  // indices into rows, consecutive per view as `rows` is
        var plainRows: [AttentionRow] = []
        var positions = 0, sharingRows = 0
        for (k, row) in rows.enumerated() {
            let (lo, visible) = range(row)
            positions += max(0, visible - lo)
            let path = plan.path[row.view]
            if path.isEmpty {
                plainRows.append(row)
                continue
            }
            slotOf[k] = slots
            var reads = false
            for n in path {
                let node = plan.nodes[n]
                if max(lo, node.start) < min(visible, node.end) {
                    nodeRows[n].append((k, slots))
                    reads = true
                }
                slots += splits[n].count
            }
            if reads { sharingRows += 1 }
            ownRows.append(k)
            slots += 1
            partsOf[k] = slots - slotOf[k]
        }

        // Jobs: (node, block of its rows, split), (block of own rows), (block of plain rows);
        // each × kv heads.
        var nodeJobs: [(node: Int, rows: Range<Int>, split: Int)] = []
        var saved = 0
        for (n, list) in nodeRows.enumerated() where !list.isEmpty {
            let node = plan.nodes[n]
            var start = 0
            while start < list.count {
                let end = min(list.count, start + max(1, counters.rowsPerJob))
                var lo = Int.max, hi = 0, read = 0
                for e in list[start..<end] {
                    let (rlo, rvis) = range(rows[e.row])
                    let a = max(rlo, node.start), b = min(rvis, node.end)
                    lo = min(lo, a)
                    hi = max(hi, b)
                    read += b - a
                }
                saved += read - (hi - lo)
                for s in splits[n].indices { nodeJobs.append((n, start..<end, s)) }
                start = end
            }
        }
        let ownSelf = ownRows.map { rows[$0] }
        let ownBlocks = Self.attentionBlocks(ownSelf, group: group) { row in
            let (lo, visible) = range(row)
            return (max(lo, plan.ownStart[row.view]), visible)
        }
        let plainBlocks = Self.attentionBlocks(plainRows, group: group, range: range)

        let slotFloats = d, statFloats = 2 * heads
        let partOut: Scratch, partStats: Scratch
        do {
            guard slots * (slotFloats + statFloats) <= counters.maxPartFloats else {
                throw BatchCoreError(.outOfMemory, "shared parts over maxPartFloats")
            }
            partOut = try Scratch(slots * slotFloats)
            partStats = try Scratch(slots * statFloats)
        } catch {
            // No room for the parts: every row reads its own keys/values, counted.
            counters.countFallbacks(ownRows.count, positions: positions)
            attendPerRow(work, q: q, qStride: qStride, out: out)
            return
        }
        counters.count(rows: sharingRows, positions: positions, saved: saved)
        // The part buffers must outlive both parallel jobs (not end at their last Swift use).
        withExtendedLifetime((partOut, partStats)) {
            runShared(work, plan: plan, splits: splits, nodeJobs: nodeJobs, nodeRows: nodeRows, ownRows: ownRows,
                      ownBlocks: ownBlocks, plainRows: plainRows, plainBlocks: plainBlocks, slotOf: slotOf,
                      partsOf: partsOf, slots: slots,
                      partOut: partOut.pointer, partStats: partStats.pointer, q: q, qStride: qStride, out: out)
        }
    }

    /// The two parallel jobs of `attendShared` over its plan (see there): parts into the
    /// slots of `partOut` (d floats each) and `partStats` (2·heads each), then the merge.
    private func runShared(_ work: AttentionWork, plan: SharedPrefixPlan, splits: [[Range<Int>]],
                           nodeJobs: [(node: Int, rows: Range<Int>, split: Int)],
                           nodeRows: [[(row: Int, slot: Int)]], ownRows: [Int], ownBlocks: [Range<Int>],
                           plainRows: [AttentionRow], plainBlocks: [Range<Int>], slotOf: [Int], partsOf: [Int],
                           slots: Int,
                           partOut po: UnsafeMutablePointer<Float>, partStats ps: UnsafeMutablePointer<Float>,
                           q: UnsafePointer<Float>, qStride: Int, out: UnsafeMutablePointer<Float>) {
        let c = config, d = c.embeddingDim, hd = c.headDim, heads = c.headCount
        let scale = 1 / Float(hd).squareRoot()
        let group = c.headCount / c.kvHeadCount, kvHeads = c.kvHeadCount
        let rows = work.rows, views = work.views, window = work.window
        func range(_ row: AttentionRow) -> (lo: Int, visible: Int) {
            (window.map { max(0, row.position - $0 + 1) } ?? 0, row.position + 1)
        }
        let slotFloats = d, statFloats = 2 * heads
        let ownSelf = ownRows.map { rows[$0] }
        ps.update(repeating: -.infinity, count: slots * statFloats)

        /// Runs `Attention.rows` for `queries` built by `make` on view `kv`.
        func run(_ count: Int, _ kv: KVView, kvHead: Int, _ make: (Int) -> AttentionQuery) {
            withUnsafeTemporaryAllocation(of: AttentionQuery.self, capacity: count) { queries in
                for i in 0..<count { queries.initializeElement(at: i, to: make(i)) }
                let qs = UnsafeBufferPointer(queries)
                withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, Attention.tiledScratch(qs, heads: group))) {
                    Attention.rows(qs, heads: group, kv: kv, offset: kvHead * hd, headDim: hd, scale: scale,
                                   scores: $0.baseAddress!)
                }
            }
        }
        // Items: the node jobs, then the plain and own blocks latest first (the most
        // positions: prompt chunks come after the decode rows), so that no long item
        // ends the job alone — as in `attendPerRow`. The order only shapes the work.
        let jobs = nodeJobs.count + ownBlocks.count + plainBlocks.count
        Parallel.forEach(jobs * kvHeads) { item in
            let j = item / kvHeads, kvHead = item % kvHeads, hOff = kvHead * group * hd
            if j < nodeJobs.count {
                let (n, span, split) = nodeJobs[j], node = plan.nodes[n], list = nodeRows[n], part = splits[n][split]
                withUnsafeTemporaryAllocation(of: AttentionQuery.self, capacity: span.count) { queries in
                    for i in 0..<span.count {
                        let e = list[span.lowerBound + i], row = rows[e.row], (lo, visible) = range(row)
                        let slot = e.slot + split
                        queries.initializeElement(at: i, to: AttentionQuery(
                            q: q + row.row * qStride + hOff, out: po + slot * slotFloats + hOff,
                            lo: max(lo, node.start), visible: min(visible, node.end),
                            stats: ps + slot * statFloats + 2 * kvHead * group))
                    }
                    let qs = UnsafeBufferPointer(queries)
                    withUnsafeTemporaryAllocation(of: Float.self,
                                                  capacity: Attention.prefixScratch(vectors: span.count * group, headDim: hd)) {
                        Attention.prefixTiled(qs, heads: group, kv: node.view, offset: kvHead * hd, headDim: hd,
                                              from: part.lowerBound, to: part.upperBound, scale: scale,
                                              scratch: $0.baseAddress!)
                    }
                }
            } else if j >= nodeJobs.count + plainBlocks.count {
                let block = ownBlocks[jobs - 1 - j]
                run(block.count, views[ownSelf[block.lowerBound].view], kvHead: kvHead) { i in
                    let k = ownRows[block.lowerBound + i], row = rows[k], (lo, visible) = range(row)
                    let slot = slotOf[k] + partsOf[k] - 1
                    return AttentionQuery(q: q + row.row * qStride + hOff, out: po + slot * slotFloats + hOff,
                                          lo: max(lo, plan.ownStart[row.view]), visible: visible,
                                          stats: ps + slot * statFloats + 2 * kvHead * group)
                }
            } else {
                attendBlock(plainRows, plainBlocks[nodeJobs.count + plainBlocks.count - 1 - j], views: views, kvHead: kvHead,
                            range: range, q: q, qStride: qStride, out: out)
            }
        }
        // 2. Merge each sharing row's parts in ascending position order into its output.
        Parallel.forEach(ownRows.count) { i in
            let k = ownRows[i], row = rows[k], first = slotOf[k], parts = partsOf[k]
            let o = out + row.row * d
            withUnsafeTemporaryAllocation(of: Float.self, capacity: statFloats) { st in
                let acc = st.baseAddress!
                acc.update(repeating: -.infinity, count: statFloats)
                o.update(repeating: 0, count: d)
                for s in first..<(first + parts) {
                    Attention.mergePartial(into: o, stats: acc, part: po + s * slotFloats, stats: ps + s * statFloats,
                                           heads: heads, headDim: hd)
                }
            }
        }
    }
}
