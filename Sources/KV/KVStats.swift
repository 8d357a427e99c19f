/// Memory statistics of a paged KV cache (`PagedKVCache.stats()`).
public struct KVStats: Equatable, Sendable {
    public var blocksTotal = 0
    public var blocksUsed = 0
    public var blocksCached = 0
    public var blocksFree = 0
    public var bytesTotal = 0
    public var bytesUsed = 0
    public var bytesPerToken = 0
    public var sequences = 0
    public var tokens = 0
    /// Prompt tokens served from the prefix cache / prompt tokens looked up.
    public var prefixHitTokens = 0
    public var prefixQueryTokens = 0
    /// KIVI storage: bytes of the sequences' float32 residual buffers (included in
    /// bytesUsed; they share the budget with the blocks, see `PagedKVCache`).
    public var residualBytes = 0
    public var hitRate: Double { prefixQueryTokens == 0 ? 0 : Double(prefixHitTokens) / Double(prefixQueryTokens) }
}
