/// The state of inference over one model: the KV cache of any number of sequences.
/// Used by one thread at a time.
public final class InferenceContext {
    public let model: LanguageModel
    public let cache: ContiguousKVCache
    public let maxPositions: Int

    public init(model: LanguageModel, maxPositions: Int = 0, kvBudgetBytes: Int = 0) throws {
        guard maxPositions >= 0, kvBudgetBytes >= 0 else { throw BatchCoreError.invalid("n_ctx and kv_bytes must be >= 0") }
        let n = maxPositions == 0 ? model.config.contextLength : maxPositions
        guard n <= model.config.contextLength else {
            throw BatchCoreError.invalid("n_ctx \(n) exceeds the model's context length \(model.config.contextLength)")
        }
        self.model = model
        self.maxPositions = n
        cache = ContiguousKVCache(layerCount: model.config.layerCount, kvDim: model.config.kvDim, maxLength: n,
                                  budgetBytes: kvBudgetBytes == 0 ? Int.max : kvBudgetBytes)
    }

    /// Runs a batch; see `Transformer.forward`. Positions past n_ctx are rejected.
    public func decode(_ batch: TokenBatch, logits: UnsafeMutablePointer<Float>?) throws {
        for p in batch.positions where p >= maxPositions {
            throw BatchCoreError.invalid("position \(p) is beyond n_ctx \(maxPositions)")
        }
        try model.transformer.forward(batch, cache: cache, logits: logits)
    }
}
