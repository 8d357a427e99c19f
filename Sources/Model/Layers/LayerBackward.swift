import BCCore
import BCKernels

extension Transformer {
    /// Backward of `mlpBlock` over the rows of `a` (T = rows). On entry g.residual holds
    /// dL/d output [T × d]; on exit dL/d mid. Accumulates the gradients of Wgate_up,
    /// Wdown and ffnNorm (when trainable), and of the projections' training adapters
    /// (`adapterBackward`, which adds their part of dX):
    ///
    ///     dAct       = dOutput · Wdown                 dWdown   += dOutputᵀ · act
    ///     dGateUp    = SwiGLU backward(dAct; gate, up)
    ///     dMlpNormed = dGateUp · Wgate_up              dWgate_up += dGateUpᵀ · mlpNormed
    ///     dMid       = dOutput + RMSNorm backward(dMlpNormed; mid, rstd)   dffnNorm += ...
    func mlpBlockBackward(_ w: LayerWeights, _ a: LayerActivations, _ g: LayerGradients, rows n: Int) throws {
        let c = config, d = c.embeddingDim, ff = c.feedForwardDim
        guard let rstd = a.mlpRstd else { throw BatchCoreError(.internal, "MLP backward without training activations") }
        w.down.backward(x: a.act, ldx: ff, dY: g.residual, ldDY: d, dX: g.act, ldDX: ff, tokens: n)
        try w.down.adapterBackward(x: a.act, ldx: ff, dY: g.residual, ldDY: d, dX: g.act, ldDX: ff, tokens: n)
        SwiGLUOp.backward(dact: g.act, ldAct: ff, gate: a.gateUp, up: a.gateUp + ff, ldIn: 2 * ff,
                          dgate: g.gateUp, dup: g.gateUp + ff, rows: n, n: ff)
        w.gateUp.backward(x: a.mlpNormed, ldx: d, dY: g.gateUp, ldDY: 2 * ff, dX: g.normed, ldDX: d, tokens: n)
        try w.gateUp.adapterBackward(x: a.mlpNormed, ldx: d, dY: g.gateUp, ldDY: 2 * ff, dX: g.normed, ldDX: d, tokens: n)
        RMSNormOp.backward(dy: g.normed, x: a.mid, g: w.ffnNorm.data, rstd: rstd, dx: g.normed,
                           dg: w.ffnNorm.grad ?? g.normGain, rows: n, d: d)
        VectorMath.add(g.normed, into: g.residual, n * d)
    }

    /// Backward of `attentionBlock` over the rows of `a` (T = rows, packed `documents`).
    /// On entry g.residual holds dL/d mid [T × d]; on exit dL/d input. Accumulates the
    /// gradients of Wqkv, Wo and attentionNorm (when trainable), and of the projections' training
    /// adapters (`adapterBackward`, which adds their part of dX):
    ///
    ///     dAttention      = dMid · Wo                  dWo   += dMidᵀ · attention
    ///     dqkv            = attention backward(dAttention; qkv, stats)   (rotated q, k)
    ///     dqkv[q], dqkv[k] ← RoPE backward (Rᵀ per row's position)
    ///     dAttentionNormed = dqkv · Wqkv               dWqkv += dqkvᵀ · attentionNormed
    ///     dInput          = dMid + RMSNorm backward(dAttentionNormed; input, rstd)
    func attentionBlockBackward(_ w: LayerWeights, _ a: LayerActivations, _ g: LayerGradients, rows n: Int,
                                documents: [Int], ropeTable: UnsafePointer<Float>) throws {
        let c = config, d = c.embeddingDim, hd = c.headDim, qkvDim = d + 2 * c.kvDim
        guard let rstd = a.attentionRstd, let stats = a.attentionStats else {
            throw BatchCoreError(.internal, "attention backward without training activations")
        }
        w.wo.backward(x: a.attention, ldx: d, dY: g.residual, ldDY: d, dX: g.attention, ldDX: d, tokens: n)
        try w.wo.adapterBackward(x: a.attention, ldx: d, dY: g.residual, ldDY: d, dX: g.attention, ldDX: d, tokens: n)
        try AttentionTraining.backward(qkv: a.qkv, rows: n, documents: documents, heads: c.headCount,
                                       kvHeads: c.kvHeadCount, headDim: hd, stats: stats, dOut: g.attention, dqkv: g.qkv)
        RoPEOp.backward(rope, g.qkv, ld: qkvDim, heads: c.headCount, tables: ropeTable, rows: n)
        RoPEOp.backward(rope, g.qkv + d, ld: qkvDim, heads: c.kvHeadCount, tables: ropeTable, rows: n)
        w.qkv.backward(x: a.attentionNormed, ldx: d, dY: g.qkv, ldDY: qkvDim, dX: g.normed, ldDX: d, tokens: n)
        try w.qkv.adapterBackward(x: a.attentionNormed, ldx: d, dY: g.qkv, ldDY: qkvDim, dX: g.normed, ldDX: d, tokens: n)
        RMSNormOp.backward(dy: g.normed, x: a.input, g: w.attentionNorm.data, rstd: rstd, dx: g.normed,
                           dg: w.attentionNorm.grad ?? g.normGain, rows: n, d: d)
        VectorMath.add(g.normed, into: g.residual, n * d)
    }
}
