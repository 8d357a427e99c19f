import BCKernels

extension Transformer {
    /// Logits of the listed rows of the final residual x [T × d]:
    ///
    ///     normed[r] = RMSNorm(x[rows[r]]) · outputNorm          normed [R × d]
    ///     logits[r] = normed[r] · Woutputᵀ                       logits [R × vocab]
    func outputHead(_ x: UnsafePointer<Float>, rows: [Int], normed: UnsafeMutablePointer<Float>,
                    logits: UnsafeMutablePointer<Float>) {
        if rows.isEmpty { return }
        let c = config, d = c.embeddingDim
        for (r, i) in rows.enumerated() {
            VectorMath.rmsNorm(x + i * d, weights.outputNorm.data, normed + r * d, d, eps: c.rmsEps)
        }
        weights.output.forward(normed, ldx: d, logits, ldy: weights.output.rows, tokens: rows.count)
    }
}
