import BCCore
import BCKernels
import BCFormats
import BCKV

#if canImport(Glibc)
import Glibc
#endif

/// A float32 scratch buffer freed with its owner.
final class Scratch {
    let pointer: UnsafeMutablePointer<Float>
    init(_ count: Int) throws { pointer = try Memory.allocateFloats(max(count, 1), fill: 0) }
    deinit { free(pointer) }
}

/// A Llama-family decoder forward pass over a flattened token batch. Immutable after
/// load and safe to share between threads; each forward call takes its own activations.
/// Every projection is ONE packed-weights matrix product over all tokens of the batch;
/// attention runs per row over the keys/values its `KVSource` provides (a sequence's
/// cached rows when serving, the row's own document in a cache-free pass). The layer
/// math lives in Layers/ (attention block, MLP block, embedding, output head) over
/// named activations (`LayerActivations`).
package final class Transformer {
    package let config: ModelConfig
    package let weights: ModelWeights
    let rope: RotaryEmbedding
    /// Reused activation sets of serving passes.
    private let workspaces = ForwardWorkspacePool()

    package init(config: ModelConfig, weights: ModelWeights) {
        self.config = config
        self.weights = weights
        rope = RotaryEmbedding(headDim: config.headDim, base: config.ropeBase)
    }

    /// Loads a model from a GGUF file.
    package convenience init(gguf: GGUFFile, weights mode: WeightMode = .native, progress: ((Double) -> Void)? = nil) throws {
        let config = try ModelConfig(gguf: gguf)
        self.init(config: config, weights: try ModelWeights(gguf: gguf, config: config, weights: mode, progress: progress))
    }

    /// y[T × rows] = x[T × cols] · Wᵀ (row stride of y: `ldy`, default rows) with the
    /// packed-weights kernel: the same per-value arithmetic for one token or many, so
    /// projections are batch invariant by construction.
    ///
    /// `adapters`: a training or evaluation pass: the base product of
    /// `Linear.trainingForward` (bf16 in training's bf16 mode) plus the projection's
    /// training adapters (`Linear.forwardTrainingAdapters`); a serving pass is the
    /// float32 base product alone, bit for bit.
    @inline(__always)
    func project(_ x: UnsafePointer<Float>, _ w: Linear, _ y: UnsafeMutablePointer<Float>, tokens: Int,
                 ldx: Int? = nil, adapters: Bool = false) throws {
        if adapters {
            w.trainingForward(x, ldx: ldx ?? w.cols, y, ldy: w.rows, tokens: tokens)
        } else {
            w.forward(x, ldx: ldx ?? w.cols, y, ldy: w.rows, tokens: tokens)
        }
        if adapters { try w.forwardTrainingAdapters(x, ldx: ldx ?? w.cols, y, ldy: w.rows, tokens: tokens) }
    }

    /// Runs the batch, appending its keys/values to `cache`, and writes one row of
    /// `vocabSize` logits per token with wantLogits (in batch order) to `logits`.
    ///
    /// Batch invariant: every value of a token's row is computed by the same operations
    /// in the same order whatever else the batch holds (`PackedGEMM` projections,
    /// `Attention.group` per row and kv head, per-row norms and activations), so a
    /// sequence's logits do not depend on what it was batched or chunked with.
    ///
    /// The KV cache is driven by `ServingKV` (check, reserve, store, gather, commit); the
    /// layers are the same functions the cache-free `forward(documents:)` runs.
    ///
    /// `adapters`: each row's serving adapter (`BatchAdapters`, one entry per batch row):
    /// every projection stays one base product over all rows, then each adapter group's
    /// low-rank updates are added to its rows; batch invariance holds as above.
    ///
    /// `sharedPrefix`: rows whose sequences share physical KV blocks read them once
    /// (Hydragen, `attendShared`; off by default) — equal to the per-row result to float
    /// rounding, not bit for bit; its counters accumulate what it did.
    package func forward(_ batch: TokenBatch, cache: KVCache, logits: UnsafeMutablePointer<Float>?,
                        adapters: BatchAdapters? = nil,
                        sharedPrefix: SharedPrefixAttention = SharedPrefixAttention(enabled: false)) throws {
        if let adapters, adapters.rowCount != batch.count {
            throw BatchCoreError.invalid("adapters for \(adapters.rowCount) rows of a batch of \(batch.count)")
        }
        let serving = adapters?.isEmpty == false ? adapters : nil
        let kv = try ServingKV(batch: batch, cache: cache, config: config, sharedPrefix: sharedPrefix)
        try kv.reserve()
        let rows = logits == nil ? [] : (0..<batch.count).filter { batch.wantLogits[$0] }
        let a = workspaces.take()
        defer { workspaces.give(a) }
        try layers(tokens: batch.tokens, positions: batch.positions, logitRows: rows.count, kv: kv, a, serving: serving)
        kv.commit()
        if let logits, let x = a.finalResidual, let normed = a.outputNormed {
            outputHead(x, rows: rows, normed: normed, logits: logits)
        }
    }

    /// Runs a batch of whole documents with no KV cache (training-style: positions
    /// restart at 0 per document, attention stays inside each document and reads the
    /// batch's own keys/values, see `SelfContainedKV`) and writes one row of `vocabSize`
    /// logits per row with wantLogits (in batch order) to `logits`.
    ///
    /// `activations`: the caller's buffers, reused from pass to pass (grow-only); after
    /// the call they hold the pass's activations — every layer's when the object keeps
    /// layers (what a backward pass reads), else the last layer's. nil: a pooled set.
    ///
    /// A document gives the same logits, bit for bit, as `forward(_:cache:logits:)` of
    /// that document alone in a fresh cache: the same kernels run on the same values.
    package func forward(documents batch: DocumentBatch, logits: UnsafeMutablePointer<Float>?,
                        activations: ForwardActivations? = nil) throws {
        let kv = try SelfContainedKV(batch, config: config)
        let rows = logits == nil ? [] : (0..<batch.count).filter { batch.wantLogits[$0] }
        let a = activations ?? workspaces.take()
        defer { if activations == nil { workspaces.give(a) } }
        try layers(tokens: batch.tokens, positions: batch.positions, logitRows: rows.count, kv: kv, a)
        if let logits, let x = a.finalResidual, let normed = a.outputNormed {
            outputHead(x, rows: rows, normed: normed, logits: logits)
        }
    }

    /// Embedding, rotation tables and every decoder layer (`attentionBlock`, `mlpBlock`)
    /// over T = tokens.count rows into `a`; the final residual is `a.finalResidual`.
    /// `adapters`: apply the training adapters (`project`); `serving`: each row's
    /// serving adapter (`BatchAdapters.apply` after each base product).
    func layers(tokens: [Int32], positions: [Int], logitRows: Int, kv: KVSource,
                        _ a: ForwardActivations, adapters: Bool = false, serving: BatchAdapters? = nil) throws {
        let n = tokens.count, hd = config.headDim
        try a.prepare(config, rows: n, logitRows: logitRows)
        guard let ropeTable = a.ropeTable else { throw BatchCoreError(.internal, "activations without a rotation table") }
        embed(tokens, into: a[0].input)
        // Rotation tables of the batch's positions, shared by every layer.
        for i in 0..<n { rope.table(position: positions[i], into: ropeTable + i * hd) }
        for (l, w) in weights.layers.enumerated() {
            let set = a[l]
            try attentionBlock(layer: l, w, set, rows: n, ropeTable: ropeTable, kv: kv, adapters: adapters, serving: serving)
            try mlpBlock(w, set, rows: n, adapters: adapters, layer: l, serving: serving)
        }
    }
}
