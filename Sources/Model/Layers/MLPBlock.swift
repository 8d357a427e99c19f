import BCKernels

extension Transformer {
    /// The MLP half of decoder layer `w` over the rows of `a` (SwiGLU):
    ///
    ///     mlpNormed = RMSNorm(mid) · ffnNorm
    ///     gateUp    = mlpNormed · Wgate_upᵀ            (rows gate | up)
    ///     act       = silu(gate) · up
    ///     output    = mid + act · Wdownᵀ
    ///
    /// `adapters`: apply the projections' training adapters (`project`); `serving`:
    /// each row's serving adapter of decoder layer `layer`, after each base product.
    func mlpBlock(_ w: LayerWeights, _ a: LayerActivations, rows n: Int, adapters: Bool = false, layer: Int = 0,
                  serving: BatchAdapters? = nil) throws {
        let c = config, d = c.embeddingDim, ff = c.feedForwardDim
        rmsNorm(a.mid, w.ffnNorm, a.mlpNormed, rstd: a.mlpRstd, rows: n)
        try project(a.mlpNormed, w.gateUp, a.gateUp, tokens: n, adapters: adapters)
        serving?.apply(layer: layer, .gateUp, x: a.mlpNormed, ldx: d, y: a.gateUp, ldy: 2 * ff)
        for i in 0..<n {
            let row = a.gateUp + i * 2 * ff
            VectorMath.swiglu(row, row + ff, a.act + i * ff, ff)
        }
        try project(a.act, w.down, a.projected, tokens: n, adapters: adapters)
        serving?.apply(layer: layer, .down, x: a.act, ldx: ff, y: a.projected, ldy: d)
        residualAdd(a.projected, from: a.mid, into: a.output, n * d)
    }
}
