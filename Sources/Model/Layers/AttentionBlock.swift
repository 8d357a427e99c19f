import BCCore
import BCKernels

extension Transformer {
    /// The attention half of decoder layer `layer` over the rows of `a` (see
    /// `LayerActivations` for the buffers):
    ///
    ///     attentionNormed = RMSNorm(input) · attentionNorm
    ///     qkv             = attentionNormed · Wqkvᵀ, then RoPE on q and k (ropeTable row i)
    ///     attention       = causal attention of each row over `kv`'s keys/values
    ///     mid             = input + attention · Woᵀ
    ///
    /// `kv` stores the batch's new keys/values after the projection and provides the views
    /// attention reads (`KVSource`); nothing here knows whether that is a cache.
    /// `adapters`: apply the projections' training adapters (before RoPE on q and k);
    /// `serving`: each row's serving adapter, likewise after each base product.
    func attentionBlock(layer: Int, _ w: LayerWeights, _ a: LayerActivations, rows n: Int,
                        ropeTable: UnsafePointer<Float>, kv: KVSource, adapters: Bool = false,
                        serving: BatchAdapters? = nil) throws {
        let c = config, d = c.embeddingDim, hd = c.headDim, qkvDim = d + 2 * c.kvDim
        rmsNorm(a.input, w.attentionNorm, a.attentionNormed, rstd: a.attentionRstd, rows: n)
        try project(a.attentionNormed, w.qkv, a.qkv, tokens: n, adapters: adapters)
        serving?.apply(layer: layer, .qkv, x: a.attentionNormed, ldx: d, y: a.qkv, ldy: qkvDim)
        for i in 0..<n {
            let row = a.qkv + i * qkvDim
            rope.apply(row, heads: c.headCount, table: ropeTable + i * hd)
            rope.apply(row + d, heads: c.kvHeadCount, table: ropeTable + i * hd)
        }
        try kv.store(layer: layer, qkv: a.qkv, rowStride: qkvDim)
        if let stats = a.attentionStats, let documents = (kv as? SelfContainedKV)?.documentLengths {
            // Training: the same arithmetic (bit-identical output) plus the softmax
            // statistics the backward pass recomputes the probabilities from.
            try AttentionTraining.forward(qkv: a.qkv, rows: n, documents: documents, heads: c.headCount,
                                          kvHeads: c.kvHeadCount, headDim: hd, out: a.attention, stats: stats)
        } else {
            try kv.read(layer: layer, qkv: a.qkv, rowStride: qkvDim) { work in
                attend(work, q: a.qkv, qStride: qkvDim, out: a.attention)
            }
        }
        try project(a.attention, w.wo, a.projected, tokens: n, adapters: adapters)
        serving?.apply(layer: layer, .wo, x: a.attention, ldx: d, y: a.projected, ldy: d)
        residualAdd(a.projected, from: a.input, into: a.mid, n * d)
    }

    /// Causal attention of `work`'s rows (GQA: query head h reads kv head h / group): one
    /// work item per (block of rows, kv head) — the query heads sharing a kv head run
    /// together while its keys/values are in cache — spread over the worker threads in ONE
    /// parallel job. A block is consecutive rows of one view (a prompt chunk's rows):
    /// `Attention.rows` reads each key/value tile once for all of them; a row alone (a
    /// decode step) runs `Attention.group`. q: row i's query heads at q + i·qStride (head
    /// h at + h·headDim); out: row i's heads at out + i·d. Both kernels give each row the
    /// bits of `Attention.group` on that row alone, so the result is independent of the
    /// batch, the blocks and the thread count (see `Attention`).
    ///
    /// With `work.sharedPrefix` enabled and views sharing physical blocks (prefix-cache
    /// hits, forks, n > 1 samples), the rows of those views read the shared runs once
    /// for all of them instead (`attendShared`, Hydragen): equal to the per-row result
    /// to float rounding (≤ 1e-5 relative on the logits, tested), deterministic for
    /// any thread count; rows that share nothing keep the per-row bits.
    func attend(_ work: AttentionWork, q: UnsafePointer<Float>, qStride: Int, out: UnsafeMutablePointer<Float>) {
        if let counters = work.sharedPrefix {
            if counters.enabled, work.views.count > 1 {
                let plan = SharedPrefixPlan(views: work.views)
                if !plan.nodes.isEmpty {
                    attendShared(work, plan: plan, counters: counters, q: q, qStride: qStride, out: out)
                    return
                }
            }
            var positions = 0
            for row in work.rows { positions += min(row.position + 1, work.window ?? .max) }
            counters.countPositions(positions)
        }
        attendPerRow(work, q: q, qStride: qStride, out: out)
    }

    /// `attend` with every row reading its own view (see `attend`).
    func attendPerRow(_ work: AttentionWork, q: UnsafePointer<Float>, qStride: Int, out: UnsafeMutablePointer<Float>) {
        let window = work.window
        func range(_ row: AttentionRow) -> (lo: Int, visible: Int) {
            (window.map { max(0, row.position - $0 + 1) } ?? 0, row.position + 1)
        }
        let blocks = Self.attentionBlocks(work.rows, group: config.headCount / config.kvHeadCount, range: range)
        let kvHeads = config.kvHeadCount
        // Latest blocks (the most positions) first: the long items do not end the job alone.
        Parallel.forEach(blocks.count * kvHeads) { item in
            attendBlock(work.rows, blocks[blocks.count - 1 - item / kvHeads], views: work.views, kvHead: item % kvHeads,
                        range: range, q: q, qStride: qStride, out: out)
        }
    }

    /// One job of `attend`: the rows `block` of `rows` (consecutive rows of one view) for
    /// kv head `kvHead`: `Attention.group` for a row alone, `Attention.rows` for several.
    func attendBlock(_ rows: [AttentionRow], _ block: Range<Int>, views: [KVView], kvHead: Int,
                     range: (AttentionRow) -> (lo: Int, visible: Int),
                     q: UnsafePointer<Float>, qStride: Int, out: UnsafeMutablePointer<Float>) {
        let c = config, d = c.embeddingDim, hd = c.headDim
        let scale = 1 / Float(hd).squareRoot()
        let group = c.headCount / c.kvHeadCount
        let first = rows[block.lowerBound], kv = views[first.view]
        if block.count == 1 {
            let (lo, visible) = range(first), i = first.row
            withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, group * (visible - lo))) { buf in
                Attention.group(q: q + i * qStride + kvHead * group * hd, heads: group, kv: kv,
                                offset: kvHead * hd, headDim: hd, lo: lo, visible: visible, scale: scale,
                                scores: buf.baseAddress!, out: out + i * d + kvHead * group * hd,
                                prefetchRows: first.first)
            }
            return
        }
        withUnsafeTemporaryAllocation(of: AttentionQuery.self, capacity: block.count) { queries in
            for (k, r) in block.enumerated() {
                let row = rows[r], (lo, visible) = range(row)
                let rowQ = q + row.row * qStride + kvHead * group * hd
                let rowOut = out + row.row * d + kvHead * group * hd
                queries.initializeElement(at: k, to: AttentionQuery(q: rowQ, out: rowOut, lo: lo, visible: visible))
            }
            let qs = UnsafeBufferPointer(queries)
            withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, Attention.tiledScratch(qs, heads: group))) {
                Attention.rows(qs, heads: group, kv: kv, offset: kvHead * hd, headDim: hd, scale: scale,
                               scores: $0.baseAddress!)
            }
        }
    }

    /// Rows per block of `attend`, at most; and the score floats a block may hold (its
    /// scratch: group · Σ positions read), so a block's scores stay near L2.
    static let attentionBlockRows = 16
    static let attentionBlockScores = 1 << 18

    /// `rows` cut into blocks of consecutive rows of the same view, each at most
    /// `attentionBlockRows` rows and `attentionBlockScores` score floats (a row alone may
    /// exceed it). Any cut gives the same bits; this one only shapes the work.
    static func attentionBlocks(_ rows: [AttentionRow], group: Int,
                                range: (AttentionRow) -> (lo: Int, visible: Int)) -> [Range<Int>] {
        var blocks: [Range<Int>] = []
        var start = 0, scores = 0
        for (k, row) in rows.enumerated() {
            let (lo, visible) = range(row), n = group * max(0, visible - lo)
            if k > start && (row.view != rows[start].view || k - start == attentionBlockRows
                             || scores + n > attentionBlockScores) {
                blocks.append(start..<k)
                start = k
                scores = 0
            }
            scores += n
        }
        if start < rows.count { blocks.append(start..<rows.count) }
        return blocks
    }

    /// y[i] = RMSNorm(x[i]) · g for i < rows ([rows × d]); rstd[i] = 1/rms(x[i]) when
    /// given (training: what `RMSNormOp.backward` reads). Rows in parallel, each with
    /// `VectorMath.rmsNorm`'s arithmetic whatever the split.
    func rmsNorm(_ x: UnsafePointer<Float>, _ g: WeightVector, _ y: UnsafeMutablePointer<Float>,
                 rstd: UnsafeMutablePointer<Float>?, rows n: Int) {
        let d = config.embeddingDim, eps = config.rmsEps
        if let rstd {
            RMSNormOp.forward(x: x, g: g.data, y: y, rstd: rstd, rows: n, d: d, eps: eps)
        } else {
            for i in 0..<n { VectorMath.rmsNorm(x + i * d, g.data, y + i * d, d, eps: eps) }
        }
    }

    /// to = from + delta over n floats. In place (to == from, the serving set) or into a
    /// kept buffer: the same single float addition per value either way.
    @inline(__always)
    func residualAdd(_ delta: UnsafePointer<Float>, from: UnsafePointer<Float>, into to: UnsafeMutablePointer<Float>,
                     _ n: Int) {
        if UnsafePointer(to) != from { to.update(from: from, count: n) }
        VectorMath.add(delta, into: to, n)
    }
}
