/// A run of cached keys/values of one sequence in one layer that lie contiguously in
/// memory: rows `start..<start+count` of the sequence, each row `kvDim` floats.
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
