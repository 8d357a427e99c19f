import BCCore
import BCKernels
#if canImport(Glibc)
import Glibc
#endif

/// The simple KV store: per sequence, one contiguous buffer per layer for keys and
/// one for values, grown by doubling up to a per-sequence limit, under a total
/// byte budget.
public final class ContiguousKVCache: KVCache {
    public let kvDim: Int
    public let layerCount: Int
    public let maxLength: Int
    public let budgetBytes: Int

    private final class Sequence {
        var capacity = 0
        var length = 0
        var keys: [UnsafeMutablePointer<Float>] = []
        var values: [UnsafeMutablePointer<Float>] = []
        deinit { for p in keys + values { free(p) } }
    }

    private var sequences: [Int: Sequence] = [:]
    public private(set) var usedBytes = 0

    public init(layerCount: Int, kvDim: Int, maxLength: Int, budgetBytes: Int = Int.max) {
        self.layerCount = layerCount
        self.kvDim = kvDim
        self.maxLength = maxLength
        self.budgetBytes = budgetBytes
    }

    public func length(of sequence: Int) -> Int { sequences[sequence]?.length ?? 0 }

    private func bytes(capacity: Int) -> Int { capacity * kvDim * 4 * 2 * layerCount }

    public func reserve(sequence: Int, length: Int) throws {
        guard length <= maxLength else {
            throw BatchCoreError(.kvFull, "sequence \(sequence) would reach \(length) positions; the limit is \(maxLength)")
        }
        let seq = sequences[sequence] ?? Sequence()
        if length <= seq.capacity { sequences[sequence] = seq; return }
        let newCapacity = min(maxLength, max(length, max(16, seq.capacity * 2)))
        let extra = bytes(capacity: newCapacity) - bytes(capacity: seq.capacity)
        guard usedBytes + extra <= budgetBytes else {
            throw BatchCoreError(.kvFull, "KV cache budget of \(budgetBytes) bytes exhausted (\(usedBytes) used)")
        }
        var keys: [UnsafeMutablePointer<Float>] = [], values: [UnsafeMutablePointer<Float>] = []
        do {
            for l in 0..<layerCount {
                let k = try Memory.allocateFloats(newCapacity * kvDim, fill: 0)
                keys.append(k)
                let v = try Memory.allocateFloats(newCapacity * kvDim, fill: 0)
                values.append(v)
                if seq.capacity > 0 {
                    k.update(from: seq.keys[l], count: seq.length * kvDim)
                    v.update(from: seq.values[l], count: seq.length * kvDim)
                }
            }
        } catch {
            for p in keys + values { free(p) }
            throw error
        }
        for p in seq.keys + seq.values { free(p) }
        seq.keys = keys
        seq.values = values
        usedBytes += extra
        seq.capacity = newCapacity
        sequences[sequence] = seq
    }

    public func write(layer: Int, sequence: Int, position: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>) {
        let seq = sequences[sequence]!
        (seq.keys[layer] + position * kvDim).update(from: keys, count: kvDim)
        (seq.values[layer] + position * kvDim).update(from: values, count: kvDim)
    }

    public var segmentsStayValid: Bool { true }

    public func segments(layer: Int, sequence: Int, length: Int) -> [KVSegment] {
        guard let seq = sequences[sequence], length > 0 else { return [] }
        return [KVSegment(keys: seq.keys[layer], values: seq.values[layer], start: 0, count: length)]
    }

    public func commit(sequence: Int, length: Int) {
        sequences[sequence]?.length = length
    }

    /// Forgets a sequence and frees its memory.
    public func remove(sequence: Int) {
        if let seq = sequences.removeValue(forKey: sequence) { usedBytes -= bytes(capacity: seq.capacity) }
    }

    /// Drops positions >= length of a sequence.
    public func truncate(sequence: Int, length: Int) {
        if let seq = sequences[sequence] { seq.length = min(seq.length, max(0, length)) }
    }
}
