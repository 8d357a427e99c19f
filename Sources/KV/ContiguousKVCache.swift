import BCCore
import BCKernels
#if canImport(Glibc)
import Glibc
#endif

/// The simple KV store: per sequence, one contiguous buffer per layer for keys and
/// one for values, grown by doubling up to a per-sequence limit, under a total
/// byte budget.
package final class ContiguousKVCache: KVCache {
    package let kvDim: Int
    package let layerCount: Int
    package let maxLength: Int
    package let budgetBytes: Int

    private final class Sequence {
        var capacity = 0
        var length = 0
        var keys: [UnsafeMutablePointer<Float>] = []
        var values: [UnsafeMutablePointer<Float>] = []
        deinit { for p in keys + values { free(p) } }
    }

    private var sequences: [Int: Sequence] = [:]
    package private(set) var usedBytes = 0

    package init(layerCount: Int, kvDim: Int, maxLength: Int, budgetBytes: Int = Int.max) {
        self.layerCount = layerCount
        self.kvDim = kvDim
        self.maxLength = maxLength
        self.budgetBytes = budgetBytes
    }

    package func length(of sequence: Int) -> Int { sequences[sequence]?.length ?? 0 }

    private func bytes(capacity: Int) -> Int { capacity * kvDim * 4 * 2 * layerCount }

    /// The capacity each growing sequence needs (doubling, at least 16 rows, at most
    /// `maxLength`) and the bytes it adds; throws `.kvFull` when the batch does not fit.
    private func plan(_ growth: [KVGrowth]) throws -> (grow: [(sequence: Int, capacity: Int)], created: [Int]) {
        var want: [Int: Int] = [:]
        for item in growth {
            guard item.length >= 0 else { throw BatchCoreError.invalid("sequence \(item.sequence): length \(item.length) < 0") }
            guard item.length <= maxLength else {
                throw BatchCoreError(.kvFull, "sequence \(item.sequence) would reach \(item.length) positions; the limit is \(maxLength)")
            }
            want[item.sequence] = max(want[item.sequence] ?? 0, item.length)
        }
        var grow: [(sequence: Int, capacity: Int)] = [], created: [Int] = []
        var extra = 0
        for (s, length) in want.sorted(by: { $0.key < $1.key }) {
            let capacity = sequences[s]?.capacity ?? 0
            if sequences[s] == nil { created.append(s) }
            guard length > capacity else { continue }
            let newCapacity = min(maxLength, max(length, max(16, capacity * 2)))
            extra += bytes(capacity: newCapacity) - bytes(capacity: capacity)
            grow.append((s, newCapacity))
        }
        guard extra <= budgetBytes - usedBytes else {
            throw BatchCoreError(.kvFull, "KV cache budget of \(budgetBytes) bytes exhausted (\(usedBytes) used, \(extra) more needed)")
        }
        return (grow, created)
    }

    package func canReserve(_ growth: [KVGrowth]) -> Bool {
        do {
            _ = try plan(growth)
            return true
        } catch {
            return false
        }
    }

    /// All or nothing: every buffer is allocated before any sequence changes.
    package func reserve(_ growth: [KVGrowth]) throws {
        let (grow, created) = try plan(growth)
        var fresh: [(keys: [UnsafeMutablePointer<Float>], values: [UnsafeMutablePointer<Float>])] = []
        var allocated: [UnsafeMutablePointer<Float>] = []
        do {
            for (_, capacity) in grow {
                var keys: [UnsafeMutablePointer<Float>] = [], values: [UnsafeMutablePointer<Float>] = []
                for _ in 0..<layerCount {
                    let k = try Memory.allocateFloats(capacity * kvDim, fill: 0)
                    allocated.append(k)
                    keys.append(k)
                    let v = try Memory.allocateFloats(capacity * kvDim, fill: 0)
                    allocated.append(v)
                    values.append(v)
                }
                fresh.append((keys, values))
            }
        } catch {
            for p in allocated { free(p) }
            throw error
        }
        for s in created { sequences[s] = Sequence() }
        for ((s, capacity), buffers) in zip(grow, fresh) {
            guard let seq = sequences[s] else { continue }
            if seq.capacity > 0 {
                for l in 0..<layerCount {
                    buffers.keys[l].update(from: seq.keys[l], count: seq.length * kvDim)
                    buffers.values[l].update(from: seq.values[l], count: seq.length * kvDim)
                }
            }
            for p in seq.keys + seq.values { free(p) }
            usedBytes += bytes(capacity: capacity) - bytes(capacity: seq.capacity)
            seq.keys = buffers.keys
            seq.values = buffers.values
            seq.capacity = capacity
        }
    }

    package func write(layer: Int, sequence: Int, position: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>) {
        guard let seq = sequences[sequence], layer >= 0, layer < layerCount, position >= 0, position < seq.capacity else { return }
        (seq.keys[layer] + position * kvDim).update(from: keys, count: kvDim)
        (seq.values[layer] + position * kvDim).update(from: values, count: kvDim)
    }

    package var segmentsStayValid: Bool { true }

    package func segments(layer: Int, sequence: Int, length: Int) throws -> [KVSegment] {
        guard let seq = sequences[sequence], length > 0, layer >= 0, layer < layerCount, seq.capacity > 0 else { return [] }
        return [KVSegment(keys: seq.keys[layer], values: seq.values[layer], start: 0, count: min(length, seq.capacity))]
    }

    package func commit(sequence: Int, length: Int) {
        sequences[sequence]?.length = length
    }

    /// Forgets a sequence and frees its memory.
    package func remove(sequence: Int) {
        if let seq = sequences.removeValue(forKey: sequence) { usedBytes -= bytes(capacity: seq.capacity) }
    }

    /// Drops positions >= length of a sequence.
    package func truncate(sequence: Int, length: Int) {
        if let seq = sequences[sequence] { seq.length = min(seq.length, max(0, length)) }
    }
}
