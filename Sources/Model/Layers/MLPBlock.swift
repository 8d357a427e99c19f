import BCKernels

extension Transformer {
    /// The MLP half of decoder layer `w` over the rows of `a` (SwiGLU):
    ///
    ///     mlpNormed = RMSNorm(mid) · ffnNorm
    ///     gateUp    = mlpNormed · Wgate_upᵀ            (rows gate | up)
    ///     act       = silu(gate) · up
    ///     output    = mid + act · Wdownᵀ
    func mlpBlock(_ w: LayerWeights, _ a: LayerActivations, rows n: Int) {
        let c = config, d = c.embeddingDim, ff = c.feedForwardDim
        rmsNorm(a.mid, w.ffnNorm, a.mlpNormed, rstd: a.mlpRstd, rows: n)
        project(a.mlpNormed, w.gateUp, a.gateUp, tokens: n)
        for i in 0..<n {
            let row = a.gateUp + i * 2 * ff
            VectorMath.swiglu(row, row + ff, a.act + i * ff, ff)
        }
        project(a.act, w.down, a.projected, tokens: n)
        residualAdd(a.projected, from: a.mid, into: a.output, n * d)
    }
}
