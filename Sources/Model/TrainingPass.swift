import BCCore
import BCKernels

extension Transformer {
    /// Checks a training batch and its per-row targets (−1: no target; else the id the
    /// row must predict, in 0..<vocab); returns the rows that have a target.
    func targetRows(_ batch: DocumentBatch, _ targets: [Int32]) throws -> [Int] {
        guard targets.count == batch.count else {
            throw BatchCoreError.invalid("\(targets.count) targets for a batch of \(batch.count) rows")
        }
        var rows: [Int] = []
        for (i, t) in targets.enumerated() {
            guard t >= -1, Int(t) < config.vocabSize else {
                throw BatchCoreError.invalid("target \(t) of row \(i) is outside -1 (none) and 0..<\(config.vocabSize)")
            }
            if t >= 0 { rows.append(i) }
        }
        return rows
    }

    /// Forward and backward of one micro-batch of packed documents (`DocumentBatch`, no
    /// KV cache) with per-row `targets` (−1: not a target): returns the summed
    /// cross-entropy and the number of targets, and ADDS the gradient of
    /// `lossScale · Σ CE` to every trainable tensor (`Linear.grad`, `WeightVector.grad`;
    /// frozen tensors get none) and to every training adapter's A and B
    /// (`Linear.trainingAdapters`, applied in this pass's projections). With lossScale = 1/N, N the target count of all
    /// micro-batches of an optimizer step, the accumulated gradient is that of the
    /// step's mean loss.
    ///
    /// `dropout`: the pass's LoRA dropout masks (`LoRADropoutPass`; adapters with
    /// dropout p > 0 drop their input values, `TrainingAdapter`); nil: no dropout.
    ///
    ///     forward:  embed → layers (keeping what backward reads, `activations.mode`) →
    ///               output head + CE on the target rows (`outputLoss`)
    ///     backward: output head → layers L−1 … 0 (`mlpBlockBackward`,
    ///               `attentionBlockBackward`; `.recompute` reruns a layer's forward first)
    ///               → embedding (dEmbedding[token] += dx, `EmbeddingOp`)
    ///
    /// Deterministic: the same bits whatever the thread count. A document's gradient
    /// contribution does not depend on the documents packed with it (attention never
    /// crosses documents; positions restart), up to float summation order in dW.
    /// Bad input (tokens, targets, documents) throws before anything changes; so does a
    /// workspace that cannot be allocated.
    package func trainingPass(_ batch: DocumentBatch, targets: [Int32], lossScale: Float,
                              activations a: ForwardActivations, gradients g: LayerGradients,
                              dropout: LoRADropoutPass? = nil) throws -> CrossEntropyTotals {
        guard a.supportsBackward else { throw BatchCoreError.invalid("a training pass needs training activations (.keepLayers or .recompute)") }
        if dropout != nil { for m in weights.projections { m.setTrainingDropout(dropout) } }
        defer { if dropout != nil { for m in weights.projections { m.setTrainingDropout(nil) } } }
        guard lossScale.isFinite else { throw BatchCoreError.invalid("loss scale \(lossScale) is not finite") }
        let kv = try SelfContainedKV(batch, config: config)
        let rows = try targetRows(batch, targets)
        let n = batch.count, d = config.embeddingDim
        try g.prepare(config, rows: n, targetRows: rows.count)
        try layers(tokens: batch.tokens, positions: batch.positions, logitRows: rows.count, kv: kv, a, adapters: true)
        let totals = try outputLoss(a, targets: targets, targetRows: rows, scale: lossScale, backward: true, g)
        guard let ropeTable = a.ropeTable else { throw BatchCoreError(.internal, "activations without a rotation table") }
        let documents = kv.documentLengths
        for l in stride(from: weights.layers.count - 1, through: 0, by: -1) {
            let w = weights.layers[l], set = a[l]
            if a.mode == .recompute && l != weights.layers.count - 1 {
                try attentionBlock(layer: l, w, set, rows: n, ropeTable: ropeTable, kv: kv, adapters: true)
                try mlpBlock(w, set, rows: n, adapters: true)
            }
            try mlpBlockBackward(w, set, g, rows: n)
            try attentionBlockBackward(w, set, g, rows: n, documents: documents, ropeTable: ropeTable)
        }
        if let dTable = weights.tokenEmbedding.grad {
            try batch.tokens.withUnsafeBufferPointer { t in
                try EmbeddingOp.backward(tokens: t.baseAddress!, rows: n, dx: g.residual, d: d, dTable: dTable,
                                         vocab: config.vocabSize)
            }
        }
        return totals
    }

    /// The summed cross-entropy and target count of a batch of packed documents (forward
    /// only; no gradient): evaluation. `activations` in any mode (`.serving` is the
    /// smallest); `g` provides the logit chunk.
    package func loss(_ batch: DocumentBatch, targets: [Int32], activations a: ForwardActivations,
                      gradients g: LayerGradients) throws -> CrossEntropyTotals {
        let kv = try SelfContainedKV(batch, config: config)
        let rows = try targetRows(batch, targets)
        try g.prepare(config, rows: batch.count, targetRows: rows.count)
        try layers(tokens: batch.tokens, positions: batch.positions, logitRows: rows.count, kv: kv, a, adapters: true)
        return try outputLoss(a, targets: targets, targetRows: rows, scale: 1, backward: false, g)
    }
}
