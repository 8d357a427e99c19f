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

    /// Causal attention of `work`'s rows (`Attention.group`; GQA: query head h reads kv
    /// head h / group): one work item per (row, kv head) — the query heads sharing a kv
    /// head run together while its keys/values are in cache — spread over the worker
    /// threads in ONE parallel job. q: row i's query heads at q + i·qStride (head h at
    /// + h·headDim); out: row i's heads at out + i·d. Each row's result is independent of
    /// the batch (see `Attention`).
    func attend(_ work: AttentionWork, q: UnsafePointer<Float>, qStride: Int, out: UnsafeMutablePointer<Float>) {
        let c = config, d = c.embeddingDim, hd = c.headDim
        let scale = 1 / Float(hd).squareRoot()
        let group = c.headCount / c.kvHeadCount, kvHeads = c.kvHeadCount
        let rows = work.rows, views = work.views, window = work.window
        Parallel.forEach(rows.count * kvHeads) { item in
            let row = rows[item / kvHeads], kvHead = item % kvHeads
            let i = row.row, p = row.position
            let lo = window.map { max(0, p - $0 + 1) } ?? 0, visible = p + 1
            withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, group * (visible - lo))) { buf in
                Attention.group(q: q + i * qStride + kvHead * group * hd, heads: group, kv: views[row.view],
                                offset: kvHead * hd, headDim: hd, lo: lo, visible: visible, scale: scale,
                                scores: buf.baseAddress!, out: out + i * d + kvHead * group * hd,
                                prefetchRows: row.first)
            }
        }
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
