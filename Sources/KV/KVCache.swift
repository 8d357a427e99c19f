import BCKernels
/// What the transformer needs from a KV cache. The simple contiguous store and the
/// paged block manager both implement it.
public protocol KVCache: AnyObject {
    /// Floats per cached row (kv heads × head dimension).
    var kvDim: Int { get }
    /// Number of positions cached for a sequence (0 for an unknown sequence).
    func length(of sequence: Int) -> Int
    /// Makes room for `sequence` to grow to `length` positions; throws `.kvFull` when
    /// it cannot (and changes nothing observable).
    func reserve(sequence: Int, length: Int) throws
    /// Stores the key and value rows of (layer, sequence, position); the position must
    /// have been reserved.
    func write(layer: Int, sequence: Int, position: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>)
    /// Segments covering the positions of the sequence in a layer that attention may
    /// read, below `length`, in order (a sliding-window layer omits positions no query
    /// can see). The pointers are valid until the next call on the cache.
    func segments(layer: Int, sequence: Int, length: Int) -> [KVSegment]
    /// True when the pointers segments() returns stay valid across segments() calls for
    /// other sequences (they point into the cache's own rows, not into a shared
    /// decoding scratch), so attention may gather every sequence's segments first.
    var segmentsStayValid: Bool { get }
    /// The attention window of a layer (a query at p sees positions > p - window), or nil.
    func window(layer: Int) -> Int?
    /// The token at a position (for prefix caching); called before commit.
    func record(sequence: Int, position: Int, token: Int32)
    /// Records that positions < length are now filled.
    func commit(sequence: Int, length: Int)
}

extension KVCache {
    public func window(layer: Int) -> Int? { nil }
    public var segmentsStayValid: Bool { false }
    /// Prefix reuse for a new sequence (see `PagedKVCache.attachPrefix`); caches
    /// without it reuse nothing.
    public func reusePrefix(sequence: Int, prompt: [Int32]) throws -> Int {
        guard let paged = self as? PagedKVCache, length(of: sequence) == 0 else { return 0 }
        return try paged.attachPrefix(sequence: sequence, prompt: prompt)
    }
    public func record(sequence: Int, position: Int, token: Int32) {}
}
