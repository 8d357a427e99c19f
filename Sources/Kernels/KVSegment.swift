/// A run of keys/values of one sequence in one layer that lie at a fixed row stride in
/// memory: positions `start..<start+count`, position p's key row at
/// `keys + (p - start) · rowStride` and its value row at `values + (p - start) · rowStride`,
/// where the stride is the one of the `KVView` holding the run (kvDim for a cache block,
/// d + 2·kvDim for the K/V columns of a training batch's qkv activations).
public struct KVSegment {
    public let keys: UnsafePointer<Float>
    public let values: UnsafePointer<Float>
    public let start: Int
    public let count: Int

    public init(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, start: Int, count: Int) {
        self.keys = keys
        self.values = values
        self.start = start
        self.count = count
    }
}
