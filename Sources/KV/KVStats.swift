/// Memory statistics of a paged KV cache (`PagedKVCache.stats()`).
package struct KVStats: Equatable, Sendable {
    package var blocksTotal = 0
    package var blocksUsed = 0
    package var blocksCached = 0
    package var blocksFree = 0
    package var bytesTotal = 0
    package var bytesUsed = 0
    package var bytesPerToken = 0
    package var sequences = 0
    package var tokens = 0
    /// Prompt tokens served from the prefix cache / prompt tokens looked up.
    package var prefixHitTokens = 0
    package var prefixQueryTokens = 0
    /// KIVI storage: bytes of the sequences' float32 residual buffers (included in
    /// bytesUsed; they share the budget with the blocks, see `PagedKVCache`).
    package var residualBytes = 0
    package var hitRate: Double { prefixQueryTokens == 0 ? 0 : Double(prefixHitTokens) / Double(prefixQueryTokens) }
}
