import BCCore
import BCKV
/// The state of inference over one model: a paged KV cache holding any number of
/// sequences. Used by one thread at a time.
package final class InferenceContext {
    package let model: LanguageModel
    package let cache: PagedKVCache
    package let maxPositions: Int
    /// Sequence id → its serving adapter and scale (`setAdapter`); absent: the base model.
    package internal(set) var sequenceAdapters: [Int: (adapter: ServingAdapter, scale: Float)] = [:]

    /// Default KV budget when the caller sets none.
    package static let defaultBudgetBytes = 1 << 30

    package init(model: LanguageModel, maxPositions: Int = 0, kvBudgetBytes: Int = 0, layout: KVLayout? = nil,
                prefixCaching: Bool = true) throws {
        guard maxPositions >= 0, kvBudgetBytes >= 0 else { throw BatchCoreError.invalid("n_ctx and kv_bytes must be >= 0") }
        let n = maxPositions == 0 ? model.config.contextLength : maxPositions
        guard n <= model.config.contextLength else {
            throw BatchCoreError.invalid("n_ctx \(n) exceeds the model's context length \(model.config.contextLength)")
        }
        let layout = layout ?? .full(layerCount: model.config.layerCount)
        guard layout.layers.count == model.config.layerCount else {
            throw BatchCoreError.invalid("KV layout has \(layout.layers.count) layers, the model \(model.config.layerCount)")
        }
        self.model = model
        self.maxPositions = n
        cache = try PagedKVCache(kvDim: model.config.kvDim, layout: layout,
                                 budgetBytes: kvBudgetBytes == 0 ? Self.defaultBudgetBytes : kvBudgetBytes,
                                 maxLength: n, prefixCaching: prefixCaching)
    }

    /// Runs a batch; see `Transformer.forward`. Positions past n_ctx are rejected.
    package func decode(_ batch: TokenBatch, logits: UnsafeMutablePointer<Float>?) throws {
        for p in batch.positions where p >= maxPositions {
            throw BatchCoreError.invalid("position \(p) is beyond n_ctx \(maxPositions)")
        }
        try decodeWithAdapters(batch, logits: logits)
    }
}

extension KVModelFingerprint {
    /// The values of `config` a sequence state records.
    package init(_ config: ModelConfig) {
        self.init(vocabSize: config.vocabSize, layerCount: config.layerCount, embeddingDim: config.embeddingDim)
    }
}

extension InferenceContext {
    /// The model values a sequence state of this context records.
    package var kvFingerprint: KVModelFingerprint { KVModelFingerprint(model.config) }
}
