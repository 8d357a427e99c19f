/// A run of keys/values of one sequence in one layer that lie at a fixed row stride in
/// memory: positions `start..<start+count`, position p's key row at
/// `keys + (p - start) · rowStride` and its value row at `values + (p - start) · rowStride`,
/// where the stride is the one of the `KVView` holding the run (kvDim for a cache block,
/// d + 2·kvDim for the K/V columns of a training batch's qkv activations).
package struct KVSegment {
    package let keys: UnsafePointer<Float>
    package let values: UnsafePointer<Float>
    package let start: Int
    package let count: Int

    package init(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, start: Int, count: Int) {
        self.keys = keys
        self.values = values
        self.start = start
        self.count = count
    }
}
