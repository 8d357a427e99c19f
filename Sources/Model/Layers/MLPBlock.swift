import BCKernels

extension Transformer {
    /// The MLP half of decoder layer `w` over the rows of `a` (SwiGLU):
    ///
    ///     mlpNormed = RMSNorm(mid) · ffnNorm
    ///     gateUp    = mlpNormed · Wgate_upᵀ            (rows gate | up)
    ///     act       = silu(gate) · up
    ///     output    = mid + act · Wdownᵀ
    ///
    /// `adapters`: apply the projections' training adapters (`project`).
    func mlpBlock(_ w: LayerWeights, _ a: LayerActivations, rows n: Int, adapters: Bool = false) throws {
        let c = config, d = c.embeddingDim, ff = c.feedForwardDim
        rmsNorm(a.mid, w.ffnNorm, a.mlpNormed, rstd: a.mlpRstd, rows: n)
        try project(a.mlpNormed, w.gateUp, a.gateUp, tokens: n, adapters: adapters)
        for i in 0..<n {
            let row = a.gateUp + i * 2 * ff
            VectorMath.swiglu(row, row + ff, a.act + i * ff, ff)
        }
        try project(a.act, w.down, a.projected, tokens: n, adapters: adapters)
        residualAdd(a.projected, from: a.mid, into: a.output, n * d)
    }
}
