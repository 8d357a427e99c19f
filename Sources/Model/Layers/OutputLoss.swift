import BCCore
import BCKernels

extension Transformer {
    /// The output head and cross-entropy of the rows of the last pass that have a target,
    /// forward and (with `backward`) backward, R = targetRows.count, C = logit chunk:
    ///
    ///     headX[r]   = finalResidual[targetRows[r]]                       [R × d]
    ///     normed[r]  = RMSNorm(headX[r]) · outputNorm                     [R × d]
    ///     logits     = normed · Woutputᵀ, C rows at a time               [C × V]
    ///     loss      += Σ_r CE(logits[r], target[r])  (double; totals)
    ///   backward (scale = the caller's 1/N):
    ///     dLogits    = scale · (softmax(logits) − onehot(target))         (in place)
    ///     dNormed    = dLogits · Woutput       dWoutput += dLogitsᵀ · normed
    ///     dHeadX     = RMSNorm backward(dNormed; headX, rstd)             doutputNorm += ...
    ///     g.residual = dHeadX scattered to the target rows, 0 on the other rows   [T × d]
    ///
    /// Only C rows of logits exist at a time (a [T × V] logits buffer would be T·V floats:
    /// 200 MB for 1,024 rows of a 49,152-token vocabulary). The gradient of Woutput is one
    /// FMA chain per value over the rows in order whatever C (see `ProjectionBackward`).
    /// A tied head accumulates into the token embedding's gradient, as the embedding's
    /// backward does.
    func outputLoss(_ a: ForwardActivations, targets: [Int32], targetRows: [Int], scale: Float, backward: Bool,
                    _ g: LayerGradients) throws -> CrossEntropyTotals {
        let c = config, d = c.embeddingDim, vocab = c.vocabSize, r = targetRows.count
        guard let x = a.finalResidual, let normed = a.outputNormed, a.logitRows == r else {
            throw BatchCoreError(.internal, "output loss without a forward pass of \(r) logit rows")
        }
        var totals = CrossEntropyTotals()
        if r == 0 {
            if backward { g.residual.update(repeating: 0, count: a.rows * d) }
            return totals
        }
        for (k, i) in targetRows.enumerated() { (g.headX + k * d).update(from: x + i * d, count: d) }
        let rowTargets = targetRows.map { targets[$0] }
        if let rstd = a.outputRstd {
            RMSNormOp.forward(x: g.headX, g: weights.outputNorm.data, y: normed, rstd: rstd, rows: r, d: d, eps: c.rmsEps)
        } else if backward {
            throw BatchCoreError(.internal, "output loss backward without training activations")
        } else {
            forEachRowBlock(r, block: 8) { range in
                for k in range {
                    VectorMath.rmsNorm(g.headX + k * d, weights.outputNorm.data, normed + k * d, d, eps: c.rmsEps)
                }
            }
        }
        let chunk = LayerGradients.logitChunk
        try rowTargets.withUnsafeBufferPointer { t in
            for start in stride(from: 0, to: r, by: chunk) {
                let m = min(chunk, r - start)
                weights.output.trainingForward(normed + start * d, ldx: d, g.logits, ldy: vocab, tokens: m)
                try CrossEntropyOp.forward(logits: g.logits, targets: t.baseAddress! + start, rows: m, vocab: vocab,
                                           into: &totals)
                if backward {
                    try CrossEntropyOp.backward(logits: g.logits, targets: t.baseAddress! + start, dlogits: g.logits,
                                                rows: m, vocab: vocab, scale: scale)
                    headBackward(x: normed + start * d, dLogits: g.logits, dX: g.normed + start * d, tokens: m, g)
                }
            }
        }
        guard backward, let rstd = a.outputRstd else { return totals }
        RMSNormOp.backward(dy: g.normed, x: g.headX, g: weights.outputNorm.data, rstd: rstd, dx: g.normed,
                           dg: weights.outputNorm.grad ?? g.normGain, rows: r, d: d)
        g.residual.update(repeating: 0, count: a.rows * d)
        for (k, i) in targetRows.enumerated() { (g.residual + i * d).update(from: g.normed + k * d, count: d) }
        return totals
    }

    /// dX[m × d] = dLogits[m × V] · Woutput and dWoutput += dLogitsᵀ · x, with the V-long
    /// reductions of dX summed in blocks of `vocabBlock` vocabulary rows: each block's
    /// product starts from zero and the block results are added in order. One FMA chain
    /// over all V = 49,152 terms (softmax probabilities that nearly cancel the target's
    /// −1) loses ~√V·ε of the terms' magnitude; blocked, (block + V/block)·ε at worst.
    /// The block size is fixed, so the bits do not depend on threads or chunks.
    func headBackward(x: UnsafePointer<Float>, dLogits: UnsafePointer<Float>, dX: UnsafeMutablePointer<Float>,
                      tokens m: Int, _ g: LayerGradients) {
        let w = weights.output, d = config.embeddingDim, vocab = config.vocabSize
        w.backward(x: x, ldx: d, dY: dLogits, ldDY: vocab, dX: nil, ldDX: d, tokens: m)
        guard let weight = w.weight, vocab > Self.vocabBlock else {
            w.backward(x: x, ldx: d, dY: dLogits, ldDY: vocab, dX: dX, ldDX: d, tokens: m, weightGradient: false)
            return
        }
        for start in stride(from: 0, to: vocab, by: Self.vocabBlock) {
            let rows = min(Self.vocabBlock, vocab - start)
            let out: UnsafeMutablePointer<Float> = start == 0 ? dX : g.headBlock!
            if let bf16 = w.bf16 {
                // bf16 compute: the same blocks, each a bf16 product with float32 sums.
                BF16GEMM.inputGradient(dLogits, ldDY: vocab, tokens: m, bf16, out, ldDX: d, accumulate: false,
                                       outputs: start..<start + rows)
            } else {
                ProjectionBackward.inputGradient(dLogits + start, ldDY: vocab, tokens: m, weight: weight + start * d,
                                                 rows: rows, cols: d, out, ldDX: d)
            }
            if start > 0 { VectorMath.add(g.headBlock!, into: dX, m * d) }
        }
    }

    /// Vocabulary rows per block of the head's dX reduction (`headBackward`).
    static let vocabBlock = 1024
}
