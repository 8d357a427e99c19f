import BCCore
import BCKV

/// Serving adapters per sequence of an `InferenceContext`: a sequence decodes with its
/// adapter (and scale), rows of other sequences in the same batch with theirs or the
/// base model (`BatchAdapters`). The KV cache keys each sequence's blocks by its
/// adapter (`ServingAdapter.cacheKey`), so prefixes are never shared across adapters.
extension InferenceContext {
    /// The prefix-cache key of sequence `sequence`'s adapter setting (0: the base model).
    package func adapterKey(of sequence: Int) -> UInt64 {
        sequenceAdapters[sequence].map { $0.adapter.cacheKey(scale: $0.scale) } ?? 0
    }

    /// Sets (adapter non-nil) or clears sequence `sequence`'s adapter. The sequence must
    /// hold no positions (`.badState` otherwise: its KV was computed under its old
    /// setting). Throws `.invalidArgument` for an adapter of another model, a
    /// non-finite scale or a negative id; on error nothing changes.
    package func setAdapter(sequence: Int, _ adapter: ServingAdapter?, scale: Float) throws {
        guard sequence >= 0 else { throw BatchCoreError.invalid("seq_id must be >= 0") }
        if let adapter {
            guard adapter.model === model else { throw BatchCoreError.invalid("the adapter was loaded for another model") }
            guard scale.isFinite else { throw BatchCoreError.invalid("adapter scale \(scale) is not finite") }
        }
        guard cache.length(of: sequence) == 0 else {
            throw BatchCoreError.badState("sequence \(sequence) holds positions; set its adapter before decoding it")
        }
        let key = adapter?.cacheKey(scale: scale) ?? 0
        if cache.contains(sequence) { try cache.setAdapterKey(key, of: sequence) }
        sequenceAdapters[sequence] = adapter.map { ($0, scale) }
    }

    /// `PagedKVCache.attachPrefix` under the sequence's adapter key.
    package func attachPrefix(sequence: Int, prompt: [Int32]) throws -> Int {
        try cache.attachPrefix(sequence: sequence, prompt: prompt, adapter: adapterKey(of: sequence))
    }

    /// Forks `parent` into `child` (copy-on-write); the child takes the parent's adapter.
    package func fork(parent: Int, child: Int) throws {
        try cache.fork(parent: parent, child: child)
        sequenceAdapters[child] = sequenceAdapters[parent]
    }

    /// Runs `batch` with each sequence's adapter. A sequence new to the cache is created
    /// under its adapter's key first (removed again if the pass fails); one whose
    /// cached positions were computed under another key (a loaded state) is refused.
    func decodeWithAdapters(_ batch: TokenBatch, logits: UnsafeMutablePointer<Float>?) throws {
        if sequenceAdapters.isEmpty {
            for s in Set(batch.sequences) where (cache.adapterKey(of: s) ?? 0) != 0 {
                throw BatchCoreError.badState("sequence \(s) was computed under an adapter the context does not set for it")
            }
            try model.transformer.forward(batch, cache: cache, logits: logits)
            return
        }
        var created: [Int] = []
        for s in Set(batch.sequences).sorted() {
            let key = adapterKey(of: s)
            if let have = cache.adapterKey(of: s) {
                if have != key {
                    if cache.length(of: s) == 0 { continue }  // set below, once nothing can fail
                    for c in created { cache.remove(sequence: c) }
                    throw BatchCoreError.badState("sequence \(s) was computed under another adapter than the one set for it")
                }
            } else if key != 0 {
                _ = try cache.attachPrefix(sequence: s, prompt: [], adapter: key)
                created.append(s)
            }
        }
        for s in Set(batch.sequences) {
            if let have = cache.adapterKey(of: s), have != adapterKey(of: s) { try cache.setAdapterKey(adapterKey(of: s), of: s) }
        }
        let perRow = batch.sequences.map { sequenceAdapters[$0] }
        do {
            let adapters = try BatchAdapters(perRow: perRow, model: model)
            try model.transformer.forward(batch, cache: cache, logits: logits, adapters: adapters)
        } catch {
            for c in created { cache.remove(sequence: c) }
            throw error
        }
    }
}
