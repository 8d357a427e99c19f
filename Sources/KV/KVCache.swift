import BCKernels
/// Growth of one sequence in a batch reservation: room for positions 0..<length.
package struct KVGrowth: Equatable, Sendable {
    package var sequence: Int
    package var length: Int
    package init(sequence: Int, length: Int) {
        self.sequence = sequence
        self.length = length
    }
}

/// What the transformer needs from a KV cache. The simple contiguous store and the
/// paged block manager both implement it.
package protocol KVCache: AnyObject {
    /// Floats per cached row (kv heads × head dimension).
    var kvDim: Int { get }
    /// Number of positions cached for a sequence (0 for an unknown sequence).
    func length(of sequence: Int) -> Int
    /// Makes room for every sequence of the batch to grow to its length (a sequence
    /// listed twice gets the larger one; unknown sequences are created, empty), all or
    /// nothing: throws `.kvFull` when the batch does not fit (`.outOfMemory` when the
    /// host allocator fails) having changed nothing — no sequence created, no block
    /// taken, statistics equal. After it succeeds, writing and gathering the reserved
    /// positions allocate nothing.
    func reserve(_ growth: [KVGrowth]) throws
    /// Whether `reserve(growth)` would succeed now: the same plan, no side effects.
    /// (A host allocation failure, which it cannot foresee, still makes reserve throw.)
    func canReserve(_ growth: [KVGrowth]) -> Bool
    /// Stores the key and value rows of (layer, sequence, position); the position must
    /// have been reserved (others are ignored).
    func write(layer: Int, sequence: Int, position: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>)
    /// Segments covering the positions of the sequence in a layer that attention may
    /// read, below `length`, in order (a sliding-window layer omits positions no query
    /// can see). The pointers are valid until the next call on the cache. Throws
    /// (`.outOfMemory`) when decoding scratch for positions that were not reserved
    /// cannot be allocated; never returns fewer segments than the positions need.
    func segments(layer: Int, sequence: Int, length: Int) throws -> [KVSegment]
    /// True when the pointers segments() returns stay valid across segments() calls for
    /// other sequences (they point into the cache's own rows, not into a shared
    /// decoding scratch), so attention may gather every sequence's segments first.
    var segmentsStayValid: Bool { get }
    /// The physical blocks a sequence reads from in a layer below `length`, in order, as
    /// (first position, positions read, block number) — a sliding window's released blocks and KIVI
    /// blocks not yet quantized (their rows are in the sequence's own residual) are
    /// omitted: equal numbers are the same memory, so two sequences listing the same
    /// number share that block. Empty when the cache has no blocks (contiguous).
    func blockIdentities(layer: Int, sequence: Int, length: Int) -> [(start: Int, count: Int, block: Int)]
    /// The attention window of a layer (a query at p sees positions > p - window), or nil.
    func window(layer: Int) -> Int?
    /// The token at a position (for prefix caching); called before commit.
    func record(sequence: Int, position: Int, token: Int32)
    /// Records that positions < length are now filled.
    func commit(sequence: Int, length: Int)
}

extension KVCache {
    package func window(layer: Int) -> Int? { nil }
    package func blockIdentities(layer: Int, sequence: Int, length: Int) -> [(start: Int, count: Int, block: Int)] { [] }
    package var segmentsStayValid: Bool { false }
    /// `reserve` for one sequence.
    package func reserve(sequence: Int, length: Int) throws {
        try reserve([KVGrowth(sequence: sequence, length: length)])
    }
    /// Prefix reuse for a new sequence (see `PagedKVCache.attachPrefix`); caches
    /// without it reuse nothing.
    package func reusePrefix(sequence: Int, prompt: [Int32]) throws -> Int {
        guard let paged = self as? PagedKVCache, length(of: sequence) == 0 else { return 0 }
        return try paged.attachPrefix(sequence: sequence, prompt: prompt)
    }
    package func record(sequence: Int, position: Int, token: Int32) {}
}
