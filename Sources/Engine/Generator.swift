import BCCore
import BCKV
import BCModel
import BCTokenizer
#if canImport(Glibc)
import Glibc
#endif

/// Why a generation ended.
package enum StopReason: Int32, Sendable {
    case length = 0
    case endOfGeneration = 1
    case callback = 2
}

/// Timing and counts of one generation.
package struct GenerationResult: Sendable {
    package var promptTokens = 0
    /// Prompt tokens served from the prefix cache instead of computed.
    package var cachedPromptTokens = 0
    package var generatedTokens = 0
    package var stopReason = StopReason.length
    package var promptSeconds = 0.0
    package var generateSeconds = 0.0
}

/// Single-sequence generation: appends the prompt to a sequence of a KV cache,
/// then samples up to `maxTokens` tokens, calling `onToken` with each token and the
/// complete UTF-8 text it adds (possibly empty while a character is incomplete).
package enum Generator {
    package static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }

    package static func generate(model: LanguageModel, cache: KVCache, sequence: Int, prompt: [Int32],
                                sampling: SamplingParams, maxTokens: Int, stopAtEndOfGeneration: Bool = true,
                                adapter: (adapter: ServingAdapter, scale: Float)? = nil,
                                onToken: (Int32, String) -> Bool) throws -> GenerationResult {
        guard !prompt.isEmpty else { throw BatchCoreError.invalid("the prompt has no tokens") }
        guard maxTokens >= 0 else { throw BatchCoreError.invalid("max tokens must be >= 0") }
        var sampler = try Sampler(params: sampling)
        let vocab = model.config.vocabSize
        let start = cache.length(of: sequence)
        guard start + prompt.count + maxTokens <= model.config.contextLength else {
            throw BatchCoreError.invalid("prompt (\(prompt.count)) + max tokens (\(maxTokens)) exceed the context length \(model.config.contextLength) at position \(start)")
        }
        var result = GenerationResult(promptTokens: prompt.count)
        var logits = [Float](repeating: 0, count: vocab)
        // A new sequence starts from the longest cached prefix of its prompt.
        // (Under an adapter, only prefixes cached under the same adapter and scale.)
        let reused: Int
        if start == 0, let adapter, let paged = cache as? PagedKVCache {
            reused = try paged.attachPrefix(sequence: sequence, prompt: prompt, adapter: adapter.adapter.cacheKey(scale: adapter.scale))
        } else {
            reused = start == 0 ? try cache.reusePrefix(sequence: sequence, prompt: prompt) : 0
        }
        /// The sequence's adapter on every row of a batch.
        func adapters(_ batch: TokenBatch) throws -> BatchAdapters? {
            guard let adapter else { return nil }
            return try BatchAdapters(perRow: Array(repeating: adapter, count: batch.count), model: model)
        }
        result.cachedPromptTokens = reused
        var batch = TokenBatch()
        for i in reused..<prompt.count {
            batch.append(prompt[i], position: start + i, sequence: sequence, logits: i == prompt.count - 1)
        }
        var history = prompt
        var decoder = StreamingDecoder(tokenizer: model.tokenizer)
        let t0 = monotonicSeconds()
        try logits.withUnsafeMutableBufferPointer { try model.transformer.forward(batch, cache: cache, logits: $0.baseAddress, adapters: adapters(batch)) }
        let t1 = monotonicSeconds()
        result.promptSeconds = t1 - t0
        while result.generatedTokens < maxTokens {
            let (token, _) = try logits.withUnsafeBufferPointer {
                try sampler.sample(logits: $0.baseAddress!, count: vocab, history: history)
            }
            result.generatedTokens += 1
            if stopAtEndOfGeneration && model.tokenizer.isEndOfGeneration(token) {
                result.stopReason = .endOfGeneration
                break
            }
            let text = try decoder.push(token)
            history.append(token)
            if !onToken(token, text) {
                result.stopReason = .callback
                break
            }
            if result.generatedTokens == maxTokens { break }
            batch = TokenBatch()
            batch.append(token, position: start + history.count - 1, sequence: sequence, logits: true)
            try logits.withUnsafeMutableBufferPointer { try model.transformer.forward(batch, cache: cache, logits: $0.baseAddress, adapters: adapters(batch)) }
        }
        let rest = decoder.finish()
        if !rest.isEmpty { _ = onToken(-1, rest) }
        result.generateSeconds = monotonicSeconds() - t1
        return result
    }
}
