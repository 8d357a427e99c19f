import BCCore
import BCKernels

extension Transformer {
    /// Rows per job of a shared run, at most (and `attentionBlockScores` score floats):
    /// each job reads the run's keys/values once for all its rows.
    static let sharedRunRows = 64

    /// `attend` when some views share runs of physical blocks (`SharedPrefixPlan`,
    /// Hydragen): for a row of a sharing view, attention over its positions lo..<visible
    /// is cut at its path's node boundaries into parts — each shared node's positions,
    /// then its own — and
    ///
    ///     1. each node's part of ALL its rows (every query head of a kv head's group, every
    ///        row of every member view) is one `Attention.rows` job per (block of rows, kv
    ///        head): each key/value tile of the run is read once for all of them, a small
    ///        matrix-matrix product; the row's own part is `Attention.rows` on its view
    ///        from its own start; each part yields its normalized output and log-sum-exp
    ///        (max, Σ exp) per head, into a slot (out: d floats, stats: 2·heads floats);
    ///     2. the parts are merged in ascending position order with
    ///        `Attention.mergePartial`: softmax over the union, exact in real arithmetic.
    ///
    /// Rows of views that share nothing run `attend`'s per-row jobs unchanged (their bits
    /// do not change). A sharing row's result is a function of its own query, its
    /// keys/values and its path's cut points; the cut points depend on which sequences
    /// share its blocks in the pass, so its values may differ from the per-row path in the
    /// last bits (float rounding of the merge, ~1e-7 relative), never with the thread
    /// count or the job split (every part is `Attention.rows`' per-row bits).
    /// Steps 1 and the unshared rows are ONE parallel job; step 2 is a second one.
    func attendShared(_ work: AttentionWork, plan: SharedPrefixPlan, counters: SharedPrefixAttention,
                      q: UnsafePointer<Float>, qStride: Int, out: UnsafeMutablePointer<Float>) {
        let c = config, d = c.embeddingDim, heads = c.headCount
        let group = c.headCount / c.kvHeadCount
        let rows = work.rows, window = work.window
        func range(_ row: AttentionRow) -> (lo: Int, visible: Int) {
            (window.map { max(0, row.position - $0 + 1) } ?? 0, row.position + 1)
        }

        // Slots: for each row of a sharing view, one per node of its path, then its own.
        // slotOf[k]: row k's first slot (−1: the row's view shares nothing).
        var slotOf = [Int](repeating: -1, count: rows.count)
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
            for (j, n) in path.enumerated() {
                let node = plan.nodes[n]
                if max(lo, node.start) < min(visible, node.end) {
                    nodeRows[n].append((k, slots + j))
                    reads = true
                }
            }
            if reads { sharingRows += 1 }
            ownRows.append(k)
            slots += path.count + 1
        }

        // Jobs: (node, block of its rows), (block of own rows), (block of plain rows); each × kv heads.
        var nodeJobs: [(node: Int, rows: Range<Int>)] = []
        var saved = 0
        for (n, list) in nodeRows.enumerated() where !list.isEmpty {
            let node = plan.nodes[n]
            var start = 0, scores = 0, lo = Int.max, hi = 0, read = 0
            func close(_ end: Int) {
                nodeJobs.append((n, start..<end))
                saved += read - (hi - lo)
            }
            for (i, e) in list.enumerated() {
                let (rlo, rvis) = range(rows[e.row])
                let a = max(rlo, node.start), b = min(rvis, node.end), m = group * (b - a)
                if i > start && (i - start == Self.sharedRunRows || scores + m > Self.attentionBlockScores) {
                    close(i)
                    start = i
                    scores = 0
                    lo = .max
                    hi = 0
                    read = 0
                }
                scores += m
                lo = min(lo, a)
                hi = max(hi, b)
                read += b - a
            }
            close(list.count)
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
            runShared(work, plan: plan, nodeJobs: nodeJobs, nodeRows: nodeRows, ownRows: ownRows, ownBlocks: ownBlocks,
                      plainRows: plainRows, plainBlocks: plainBlocks, slotOf: slotOf, slots: slots,
                      partOut: partOut.pointer, partStats: partStats.pointer, q: q, qStride: qStride, out: out)
        }
    }

    /// The two parallel jobs of `attendShared` over its plan (see there): parts into the
    /// slots of `partOut` (d floats each) and `partStats` (2·heads each), then the merge.
    private func runShared(_ work: AttentionWork, plan: SharedPrefixPlan, nodeJobs: [(node: Int, rows: Range<Int>)],
                           nodeRows: [[(row: Int, slot: Int)]], ownRows: [Int], ownBlocks: [Range<Int>],
                           plainRows: [AttentionRow], plainBlocks: [Range<Int>], slotOf: [Int], slots: Int,
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
        let jobs = nodeJobs.count + ownBlocks.count + plainBlocks.count
        Parallel.forEach(jobs * kvHeads) { item in
            let j = item / kvHeads, kvHead = item % kvHeads, hOff = kvHead * group * hd
            if j < nodeJobs.count {
                let (n, span) = nodeJobs[j], node = plan.nodes[n], list = nodeRows[n]
                run(span.count, node.view, kvHead: kvHead) { i in
                    let e = list[span.lowerBound + i], row = rows[e.row], (lo, visible) = range(row)
                    return AttentionQuery(q: q + row.row * qStride + hOff, out: po + e.slot * slotFloats + hOff,
                                          lo: max(lo, node.start), visible: min(visible, node.end),
                                          stats: ps + e.slot * statFloats + 2 * kvHead * group)
                }
            } else if j < nodeJobs.count + ownBlocks.count {
                let block = ownBlocks[j - nodeJobs.count]
                run(block.count, views[ownSelf[block.lowerBound].view], kvHead: kvHead) { i in
                    let k = ownRows[block.lowerBound + i], row = rows[k], (lo, visible) = range(row)
                    let slot = slotOf[k] + plan.path[row.view].count
                    return AttentionQuery(q: q + row.row * qStride + hOff, out: po + slot * slotFloats + hOff,
                                          lo: max(lo, plan.ownStart[row.view]), visible: visible,
                                          stats: ps + slot * statFloats + 2 * kvHead * group)
                }
            } else {
                attendBlock(plainRows, plainBlocks[j - nodeJobs.count - ownBlocks.count], views: views, kvHead: kvHead,
                            range: range, q: q, qStride: qStride, out: out)
            }
        }
        // 2. Merge each sharing row's parts in ascending position order into its output.
        Parallel.forEach(ownRows.count) { i in
            let k = ownRows[i], row = rows[k], first = slotOf[k], parts = plan.path[row.view].count + 1
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
