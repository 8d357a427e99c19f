/// A run of cached keys/values of one sequence in one layer that lie contiguously in
/// memory: rows `start..<start+count` of the sequence, each row `kvDim` floats.
public struct KVSegment {
    public let keys: UnsafePointer<Float>
    public let values: UnsafePointer<Float>
    public let start: Int
    public let count: Int
}

/// What the transformer needs from a KV cache. The simple contiguous store below
/// implements it; the paged block manager replaces it behind the same interface.
public protocol KVCache: AnyObject {
    /// Floats per cached row (kv heads × head dimension).
    var kvDim: Int { get }
    /// Number of positions cached for a sequence (0 for an unknown sequence).
    func length(of sequence: Int) -> Int
    /// Makes room for `sequence` to grow to `length` positions; throws `.kvFull` when
    /// it cannot (and changes nothing).
    func reserve(sequence: Int, length: Int) throws
    /// Where the key and value row of (layer, sequence, position) are written.
    func slot(layer: Int, sequence: Int, position: Int) -> (keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>)
    /// Segments covering positions 0..<length of the sequence in a layer, in order.
    func segments(layer: Int, sequence: Int, length: Int) -> [KVSegment]
    /// Records that positions < length are now filled.
    func commit(sequence: Int, length: Int)
}
