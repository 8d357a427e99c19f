import BCCore
import BCKernels
#if canImport(Glibc)
import Glibc
#endif

/// Memory statistics of a paged KV cache.
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

/// The paged KV-cache manager ("Efficient Memory Management for Large Language Model
/// Serving with PagedAttention"): fixed-size blocks of `blockSize` tokens holding the
/// keys and values of every storing layer of a group, per-sequence block tables,
/// reference counts, copy-on-write forks, and automatic prefix caching — a full block
/// is named by a hash chained over (parent hash, its tokens, adapter id); a new
/// sequence whose prompt starts with cached blocks reuses them (SGLang's
/// RadixAttention / vLLM's automatic prefix caching), finished sequences leave their
/// full blocks cached, and unreferenced cached blocks are evicted least recently used
/// first. Layers may use sliding windows (blocks no query can see are released) or
/// read another layer's KV (MixAttention / cross-layer attention).
///
/// KIVI storage (`.kivi4`, `.kivi2`, see `KIVICodec`): blocks hold 4- or 2-bit codes
/// with float16 scales/minima (keys per channel over the block's tokens, values per
/// token in channel groups), so `bytesPerToken` is the true quantized size including
/// the scales and minima. Positions that cannot be quantized yet live in a per-sequence
/// float32 *residual* (one buffer per layer group, rows = positions
/// `quantizedBlocks · blockSize ..< reserved length`): a block is quantized, at
/// `commit`, only once it is full AND all its positions are older than the
/// `layout.kiviResidual` (R, default 32) most recent ones; until then attention reads
/// its rows from the residual, exactly. Blocks are still allocated at `reserve` (so
/// `commit` never allocates); they simply hold no data until quantized.
/// - Budget: residual buffers are charged to `budgetBytes` like blocks (capacity rows ×
///   2 × storing layers × kvDim × 4 bytes, capacity rounded up to whole blocks); in
///   steady decoding a sequence holds R + blockSize rows (e.g. 48 with R = 32,
///   blockSize 16), during a long prefill as many rows as the prompt until its commit
///   quantizes them. Growing a residual may evict cached blocks; `stats()` reports
///   `residualBytes` and counts it in `bytesUsed`, and `blocksTotal` is what the rest
///   of the budget holds.
/// - Forks copy the parent's residual (a fork may throw `.kvFull` when the copy does
///   not fit). Shared blocks quantized by two sequences receive identical codes (they
///   quantize identical rows), and a partial block is copied on write as before.
/// - Prefix caching: a block is named (reusable) only once it is quantized, and a new
///   sequence reuses at most the blocks ending R positions before its prompt's end, so
///   its R most recent positions are always computed in f32. Reused blocks carry the
///   original sequence's quantization error (as with the other lossy types).
/// - Truncating into a quantized block re-expands that block's kept rows into the
///   residual by dequantizing them: those rows keep their quantization error and are
///   quantized again when the block fills (error up to scale/2 per quantization), and
///   the positions before the cut in earlier blocks stay quantized even if they are now
///   among the R most recent. Truncating inside the residual is exact.
///
/// Every operation either completes or throws and leaves the cache as it was.
/// Not thread-safe: one thread at a time.
public final class PagedKVCache: KVCache {
    public let kvDim: Int
    public let layout: KVLayout
    public let budgetBytes: Int
    public let maxLength: Int
    public var blockSize: Int { layout.blockSize }
    public var prefixCachingEnabled: Bool

    /// Storing layers with the same window share blocks.
    final class Group {
        let window: Int?
        let layers: [Int]
        let blockBytes: Int
        var memory: [UnsafeMutableRawPointer] = []
        var refcount: [Int32] = []
        var hash: [UInt64?] = []
        var blockTokens: [[Int32]] = []
        var freeList: [Int32] = []
        var byHash: [UInt64: Int32] = [:]
        // LRU of cached blocks (refcount 0, hashed): an intrusive doubly linked list.
        var prev: [Int32] = [], next: [Int32] = []
        var head: Int32 = -1, tail: Int32 = -1
        var cachedCount = 0

        init(window: Int?, layers: [Int], blockBytes: Int) {
            self.window = window
            self.layers = layers
            self.blockBytes = blockBytes
        }
        deinit { for m in memory { free(m) } }

        func lruRemove(_ b: Int32) {
            let p = prev[Int(b)], n = next[Int(b)]
            if p >= 0 { next[Int(p)] = n } else { head = n }
            if n >= 0 { prev[Int(n)] = p } else { tail = p }
            prev[Int(b)] = -1; next[Int(b)] = -1
            cachedCount -= 1
        }
        func lruAppend(_ b: Int32) {
            prev[Int(b)] = tail; next[Int(b)] = -1
            if tail >= 0 { next[Int(tail)] = b } else { head = b }
            tail = b
            cachedCount += 1
        }
    }

    final class Sequence {
        var length = 0
        var tokens: [Int32] = []
        var tables: [[Int32]]
        var adapter: UInt64 = 0
        /// Chained hashes of the sequence's full blocks, in order.
        var hashes: [UInt64] = []
        // KIVI: blocks 0..<quantizedBlocks hold codes; positions from
        // quantizedBlocks · blockSize up to `reserved` live in `residual` (per group:
        // [storing layer][K, V][residualCapacity rows][kvDim] float32).
        var quantizedBlocks = 0
        var reserved = 0
        var residual: [UnsafeMutablePointer<Float>?]
        var residualCapacity = 0
        init(groups: Int) {
            tables = Array(repeating: [], count: groups)
            residual = Array(repeating: nil, count: groups)
        }
        deinit { for r in residual { free(r) } }
    }

    var groups: [Group] = []
    /// layer → (group, index within group); shared layers map to their source.
    private var layerSlot: [(group: Int, index: Int)] = []
    private var sequences: [Int: Sequence] = [:]
    private var allocatedBytes = 0
    private var hitTokens = 0, queryTokens = 0
    /// Dequantized rows for quantized storage (segments of the last call).
    private var scratch: UnsafeMutablePointer<Float>?
    private var scratchCount = 0
    /// Bytes of one layer's key / value plane in a block.
    private let keyPlaneBytes: Int, valuePlaneBytes: Int
    private var kivi: Bool { layout.storage.isKIVI }
    /// KIVI: bytes of all residual buffers (part of allocatedBytes).
    private var residualBytes = 0

    public init(kvDim: Int, layout: KVLayout, budgetBytes: Int, maxLength: Int = Int.max, prefixCaching: Bool = true) throws {
        try layout.validate()
        guard kvDim > 0 else { throw BatchCoreError.invalid("kvDim must be > 0") }
        guard budgetBytes > 0 else { throw BatchCoreError.invalid("KV budget must be > 0 bytes") }
        self.kvDim = kvDim
        self.layout = layout
        self.budgetBytes = budgetBytes
        self.maxLength = maxLength
        let storing = layout.storingGroups
        // Prefix reuse needs every position of every stored layer: only without windows.
        prefixCachingEnabled = prefixCaching && storing.allSatisfy { $0.window == nil }
        keyPlaneBytes = layout.storage.planeBytes(dim: kvDim, blockSize: layout.blockSize, value: false)
        valuePlaneBytes = layout.storage.planeBytes(dim: kvDim, blockSize: layout.blockSize, value: true)
        for g in storing {
            let bytes = (g.layers.count * (keyPlaneBytes + valuePlaneBytes) + 63) / 64 * 64
            groups.append(Group(window: g.window, layers: g.layers, blockBytes: bytes))
        }
        layerSlot = Array(repeating: (0, 0), count: layout.layers.count)
        for (gi, g) in groups.enumerated() { for (li, l) in g.layers.enumerated() { layerSlot[l] = (gi, li) } }
        for (l, kind) in layout.layers.enumerated() { if case .shared(let s) = kind { layerSlot[l] = layerSlot[s] } }
        guard budgetBytes >= groups.reduce(0, { $0 + $1.blockBytes }) else {
            throw BatchCoreError.invalid("KV budget of \(budgetBytes) bytes holds less than one block")
        }
    }

    deinit { free(scratch) }

    /// Bytes of KV per token over all groups (what one more token of context costs).
    public var bytesPerToken: Int { groups.reduce(0) { $0 + $1.blockBytes } / layout.blockSize }

    // MARK: block allocation

    private func isStoring(_ layer: Int) -> Bool {
        if case .shared = layout.layers[layer] { return false }
        return true
    }

    /// How many new blocks group g can still get (free list + budget + evictable cache).
    private func available(_ g: Int) -> Int {
        let group = groups[g]
        var n = group.freeList.count + group.cachedCount
        n += (budgetBytes - allocatedBytes) / group.blockBytes
        // Cached blocks of other groups can be freed to make room.
        for (o, other) in groups.enumerated() where o != g {
            n += other.cachedCount * other.blockBytes / group.blockBytes
        }
        return n
    }

    /// A block with refcount 1. Callers check `available` first.
    private func allocate(_ g: Int) -> Int32 {
        let group = groups[g]
        if let b = group.freeList.popLast() {
            group.refcount[Int(b)] = 1
            return b
        }
        if budgetBytes - allocatedBytes < group.blockBytes {
            if group.head >= 0 {
                let b = group.head
                evict(g, b)
                group.freeList.removeLast()  // evict pushed it
                group.refcount[Int(b)] = 1
                return b
            }
            // Free other groups' cached blocks until the budget fits one more.
            for (o, other) in groups.enumerated() where o != g {
                while budgetBytes - allocatedBytes < group.blockBytes, other.head >= 0 {
                    let b = other.head
                    evict(o, b)
                    releaseMemory(o, b)
                }
            }
        }
        var raw: UnsafeMutableRawPointer?
        if posix_memalign(&raw, 64, group.blockBytes) != 0 || raw == nil {
            // Out of host memory although inside the budget: treated as a full cache.
            return -1
        }
        memset(raw!, 0, group.blockBytes)
        allocatedBytes += group.blockBytes
        group.memory.append(raw!)
        group.refcount.append(1)
        group.hash.append(nil)
        group.blockTokens.append([])
        group.prev.append(-1)
        group.next.append(-1)
        return Int32(group.memory.count - 1)
    }

    /// Removes a cached block from the LRU and hash map; it goes to the free list.
    private func evict(_ g: Int, _ b: Int32) {
        let group = groups[g]
        group.lruRemove(b)
        if let h = group.hash[Int(b)], group.byHash[h] == b { group.byHash[h] = nil }
        group.hash[Int(b)] = nil
        group.blockTokens[Int(b)] = []
        group.freeList.append(b)
    }

    /// Gives a free-listed block's memory back (budget for other groups).
    private func releaseMemory(_ g: Int, _ b: Int32) {
        let group = groups[g]
        if let i = group.freeList.lastIndex(of: b) { group.freeList.remove(at: i) }
        free(group.memory[Int(b)])
        // Keep the slot (ids are stable) with a 1-byte placeholder until reused.
        group.memory[Int(b)] = malloc(1)!
        allocatedBytes -= group.blockBytes
        group.refcount[Int(b)] = -1  // marks "no memory"
    }

    private func decref(_ g: Int, _ b: Int32) {
        let group = groups[g]
        group.refcount[Int(b)] -= 1
        guard group.refcount[Int(b)] == 0 else { return }
        if prefixCachingEnabled, group.hash[Int(b)] != nil {
            group.lruAppend(b)
        } else {
            group.hash[Int(b)] = nil
            group.blockTokens[Int(b)] = []
            group.freeList.append(b)
        }
    }

    private func incref(_ g: Int, _ b: Int32) {
        let group = groups[g]
        if group.refcount[Int(b)] == 0 { group.lruRemove(b) }
        group.refcount[Int(b)] += 1
    }

    // MARK: KVCache

    public func length(of sequence: Int) -> Int { sequences[sequence]?.length ?? 0 }

    public func window(layer: Int) -> Int? { layout.window(of: layer) }

    public func reserve(sequence: Int, length newLength: Int) throws {
        guard newLength <= maxLength else {
            throw BatchCoreError(.kvFull, "sequence \(sequence) would reach \(newLength) positions; the limit is \(maxLength)")
        }
        let seq = sequences[sequence] ?? Sequence(groups: groups.count)
        let bs = layout.blockSize
        let oldLength = seq.length
        guard newLength > oldLength else { sequences[sequence] = seq; return }
        let firstBlock = oldLength / bs, lastBlock = (newLength - 1) / bs
        // Plan: per group, blocks to create and shared blocks to copy (copy-on-write).
        var needs: [Int] = Array(repeating: 0, count: groups.count)
        for (g, group) in groups.enumerated() {
            let table = seq.tables[g]
            for bi in firstBlock...lastBlock {
                if bi >= table.count { needs[g] += 1 }
                else if table[Int(bi)] >= 0, group.refcount[Int(table[Int(bi)])] > 1 { needs[g] += 1 }
            }
        }
        // Check every group before changing anything (a joint check for the shared budget).
        var bytesNeeded = 0
        for (g, group) in groups.enumerated() where needs[g] > 0 {
            guard available(g) >= needs[g] else {
                throw BatchCoreError(.kvFull, "KV cache full: sequence \(sequence) needs \(needs[g]) more blocks of layer group \(g), \(available(g)) available")
            }
            bytesNeeded += max(0, needs[g] - group.freeList.count - group.cachedCount) * group.blockBytes
        }
        let evictable = groups.reduce(0) { $0 + $1.cachedCount * $1.blockBytes }
        guard bytesNeeded <= budgetBytes - allocatedBytes + evictable else {
            throw BatchCoreError(.kvFull, "KV cache full: \(bytesNeeded) more bytes needed, budget \(budgetBytes)")
        }
        // KIVI: the residual grows too; blocks and residual are checked jointly (every
        // new block takes a free-listed block, new budget or an evicted cached block,
        // each of which the residual could otherwise have used).
        var residualRows = seq.residualCapacity
        if kivi {
            let rows = newLength - seq.quantizedBlocks * bs
            if rows > seq.residualCapacity { residualRows = (rows + bs - 1) / bs * bs }
            var demand = (residualRows - seq.residualCapacity) * residualRowBytes
            for (g, group) in groups.enumerated() { demand += needs[g] * group.blockBytes }
            guard demand <= budgetBytes - allocatedBytes + reclaimableBytes else {
                throw BatchCoreError(.kvFull, "KV cache full: sequence \(sequence) needs \(demand) more bytes of blocks and residual, budget \(budgetBytes)")
            }
        }
        var created: [(Int, Int32)] = []
        for (g, group) in groups.enumerated() where needs[g] > 0 {
            var table = seq.tables[g]
            for bi in firstBlock...lastBlock {
                if bi < table.count, table[bi] >= 0, group.refcount[Int(table[bi])] > 1 {
                    let old = table[bi]
                    let b = allocate(g)
                    guard b >= 0 else { rollback(created); throw BatchCoreError(.outOfMemory, "cannot allocate a KV block") }
                    created.append((g, b))
                    memcpy(group.memory[Int(b)], group.memory[Int(old)], group.blockBytes)
                    table[bi] = b
                    decref(g, old)
                } else if bi >= table.count {
                    let b = allocate(g)
                    guard b >= 0 else { rollback(created); throw BatchCoreError(.outOfMemory, "cannot allocate a KV block") }
                    created.append((g, b))
                    table.append(b)
                }
            }
            seq.tables[g] = table
        }
        if residualRows > seq.residualCapacity {
            guard makeRoom((residualRows - seq.residualCapacity) * residualRowBytes),
                  resizeResidual(seq, rows: residualRows, keep: seq.reserved - seq.quantizedBlocks * bs) else {
                rollback(created)
                throw BatchCoreError(.outOfMemory, "cannot allocate a KIVI residual buffer")
            }
        }
        seq.reserved = max(seq.reserved, newLength)
        sequences[sequence] = seq
    }

    // MARK: KIVI residual

    /// Bytes of one residual row over all groups (K and V of every storing layer).
    private var residualRowBytes: Int { groups.reduce(0) { $0 + 2 * $1.layers.count } * kvDim * 4 }

    /// Bytes that freeing free-listed and evicting cached blocks would give back.
    private var reclaimableBytes: Int { groups.reduce(0) { $0 + ($1.freeList.count + $1.cachedCount) * $1.blockBytes } }

    /// Frees free-listed blocks' memory, then evicts cached blocks (least recently used
    /// first), until `bytes` more fit in the budget; returns whether they do.
    private func makeRoom(_ bytes: Int) -> Bool {
        for (g, group) in groups.enumerated() {
            while budgetBytes - allocatedBytes < bytes, let b = group.freeList.last { releaseMemory(g, b) }
        }
        for (g, group) in groups.enumerated() {
            while budgetBytes - allocatedBytes < bytes, group.head >= 0 {
                let b = group.head
                evict(g, b)
                releaseMemory(g, b)
            }
        }
        return budgetBytes - allocatedBytes >= bytes
    }

    /// Reallocates a sequence's residual buffers to `rows` rows, keeping its first
    /// `keep` rows; charges the difference to the budget. False (and nothing changed)
    /// when the host allocator fails.
    private func resizeResidual(_ seq: Sequence, rows: Int, keep: Int) -> Bool {
        var fresh: [UnsafeMutablePointer<Float>?] = Array(repeating: nil, count: groups.count)
        if rows > 0 {
            let n = max(0, min(keep, rows, seq.residualCapacity))
            for (g, group) in groups.enumerated() {
                let planes = 2 * group.layers.count
                guard let p = malloc(planes * rows * kvDim * 4)?.assumingMemoryBound(to: Float.self) else {
                    for f in fresh { free(f) }
                    return false
                }
                if n > 0, let old = seq.residual[g] {
                    for pl in 0..<planes { (p + pl * rows * kvDim).update(from: old + pl * seq.residualCapacity * kvDim, count: n * kvDim) }
                }
                fresh[g] = p
            }
        }
        for r in seq.residual { free(r) }
        let delta = (rows - seq.residualCapacity) * residualRowBytes
        allocatedBytes += delta
        residualBytes += delta
        seq.residual = fresh
        seq.residualCapacity = rows
        return true
    }

    /// The residual rows of one layer's keys or values (row 0 = the first unquantized position).
    @inline(__always)
    private func residualPlane(_ seq: Sequence, _ g: Int, _ li: Int, value: Bool) -> UnsafeMutablePointer<Float> {
        seq.residual[g]! + (li * 2 + (value ? 1 : 0)) * seq.residualCapacity * kvDim
    }

    /// Quantizes every block that is full and entirely older than the R most recent
    /// positions, then drops its rows from the residual.
    private func quantizeOldBlocks(_ seq: Sequence) {
        let bs = layout.blockSize, bits = layout.storage.kiviBits
        let first = seq.quantizedBlocks
        var q = first
        while (q + 1) * bs + layout.kiviResidual <= seq.length { q += 1 }
        guard q > first else { return }
        for blk in first..<q {
            let off = (blk - first) * bs * kvDim
            for (g, group) in groups.enumerated() where blk < seq.tables[g].count && seq.tables[g][blk] >= 0 {
                let b = seq.tables[g][blk]
                for li in group.layers.indices {
                    KIVICodec.encodeKeys(residualPlane(seq, g, li, value: false) + off, dim: kvDim, blockSize: bs, bits: bits,
                                         into: planePointer(g, block: b, index: li, value: false))
                    KIVICodec.encodeValues(residualPlane(seq, g, li, value: true) + off, count: bs, dim: kvDim, blockSize: bs,
                                           bits: bits, into: planePointer(g, block: b, index: li, value: true))
                }
            }
        }
        let drop = (q - first) * bs, remain = max(0, seq.reserved - q * bs)
        for (g, group) in groups.enumerated() {
            for pl in 0..<2 * group.layers.count {
                let plane = seq.residual[g]! + pl * seq.residualCapacity * kvDim
                memmove(plane, plane + drop * kvDim, remain * kvDim * 4)
            }
        }
        seq.quantizedBlocks = q
        // Give back what a long prefill needed; keep R + blockSize rows for decoding.
        let steady = (layout.kiviResidual + 2 * bs - 1) / bs * bs
        let target = max((remain + bs - 1) / bs * bs, min(seq.residualCapacity, steady))
        if target < seq.residualCapacity { _ = resizeResidual(seq, rows: target, keep: remain) }
    }

    private func rollback(_ created: [(Int, Int32)]) {
        // Only reached when the host allocator fails inside the budget; blocks made so
        // far are returned to the free lists (tables keep at most extra capacity).
        for (g, b) in created { groups[g].refcount[Int(b)] = 0; groups[g].freeList.append(b) }
    }

    /// One layer's key or value plane in a block: [K planes per layer][V planes per layer].
    @inline(__always)
    private func planePointer(_ g: Int, block: Int32, index li: Int, value: Bool) -> UnsafeMutableRawPointer {
        let group = groups[g]
        return group.memory[Int(block)] + (value ? group.layers.count * keyPlaneBytes + li * valuePlaneBytes : li * keyPlaneBytes)
    }

    @inline(__always)
    private func rowPointer(_ g: Int, block: Int32, index li: Int, row: Int, value: Bool) -> UnsafeMutableRawPointer {
        planePointer(g, block: block, index: li, value: value) + row * layout.storage.rowBytes(kvDim)
    }

    public func write(layer: Int, sequence: Int, position: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>) {
        guard isStoring(layer), let seq = sequences[sequence] else { return }
        let (g, li) = layerSlot[layer]
        if kivi {
            let r = position - seq.quantizedBlocks * layout.blockSize
            guard r >= 0, r < seq.residualCapacity else { return }
            (residualPlane(seq, g, li, value: false) + r * kvDim).update(from: keys, count: kvDim)
            (residualPlane(seq, g, li, value: true) + r * kvDim).update(from: values, count: kvDim)
            return
        }
        let b = seq.tables[g][position / layout.blockSize]
        let row = position % layout.blockSize
        KVCodec.encode(keys, kvDim, layout.storage, into: rowPointer(g, block: b, index: li, row: row, value: false))
        KVCodec.encode(values, kvDim, layout.storage, into: rowPointer(g, block: b, index: li, row: row, value: true))
    }

    public var segmentsStayValid: Bool { layout.storage == .f32 && !kivi }

    public func segments(layer: Int, sequence: Int, length: Int) -> [KVSegment] {
        guard let seq = sequences[sequence], length > 0 else { return [] }
        let (g, li) = layerSlot[layer]
        let bs = layout.blockSize
        let table = seq.tables[g]
        let blocks = (length + bs - 1) / bs
        var out: [KVSegment] = []
        if kivi { return kiviSegments(seq, g, li, length) }
        if layout.storage != .f32 {
            let needed = blocks * bs * kvDim * 2
            if needed > scratchCount {
                free(scratch)
                scratch = try? Memory.allocateFloats(needed, fill: 0)
                scratchCount = scratch == nil ? 0 : needed
            }
        }
        for bi in 0..<min(blocks, table.count) where table[bi] >= 0 {
            let count = min(bs, length - bi * bs)
            let k = rowPointer(g, block: table[bi], index: li, row: 0, value: false)
            let v = rowPointer(g, block: table[bi], index: li, row: 0, value: true)
            if layout.storage == .f32 {
                out.append(KVSegment(keys: k.assumingMemoryBound(to: Float.self), values: v.assumingMemoryBound(to: Float.self),
                                     start: bi * bs, count: count))
            } else if let scratch {
                let kd = scratch + bi * bs * kvDim * 2, vd = kd + bs * kvDim
                let rb = layout.storage.rowBytes(kvDim)
                for r in 0..<count {
                    KVCodec.decode(k + r * rb, kvDim, layout.storage, into: kd + r * kvDim)
                    KVCodec.decode(v + r * rb, kvDim, layout.storage, into: vd + r * kvDim)
                }
                out.append(KVSegment(keys: kd, values: vd, start: bi * bs, count: count))
            }
        }
        return out
    }

    /// KIVI: quantized blocks dequantized into the scratch, then the residual in place.
    private func kiviSegments(_ seq: Sequence, _ g: Int, _ li: Int, _ length: Int) -> [KVSegment] {
        let bs = layout.blockSize, bits = layout.storage.kiviBits
        let start = seq.quantizedBlocks * bs
        let blocks = min(seq.quantizedBlocks, (length + bs - 1) / bs, seq.tables[g].count)
        var out: [KVSegment] = []
        let needed = blocks * bs * kvDim * 2
        if needed > scratchCount {
            free(scratch)
            scratch = try? Memory.allocateFloats(needed, fill: 0)
            scratchCount = scratch == nil ? 0 : needed
        }
        if let scratch {
            for bi in 0..<blocks where seq.tables[g][bi] >= 0 {
                let b = seq.tables[g][bi]
                let count = min(bs, length - bi * bs)
                let kd = scratch + bi * bs * kvDim * 2, vd = kd + bs * kvDim
                KIVICodec.decodeKeys(planePointer(g, block: b, index: li, value: false), rows: count, dim: kvDim,
                                     blockSize: bs, bits: bits, into: kd)
                KIVICodec.decodeValues(planePointer(g, block: b, index: li, value: true), rows: count, dim: kvDim,
                                       blockSize: bs, bits: bits, into: vd)
                out.append(KVSegment(keys: kd, values: vd, start: bi * bs, count: count))
            }
        }
        let count = min(length - start, seq.residualCapacity)
        if count > 0 {
            out.append(KVSegment(keys: residualPlane(seq, g, li, value: false), values: residualPlane(seq, g, li, value: true),
                                 start: start, count: count))
        }
        return out
    }

    /// KIVI: positions `0..<quantizedLength` of a sequence are stored quantized, the
    /// rest in the float32 residual (0 for other storage types).
    public func quantizedLength(of sequence: Int) -> Int {
        guard kivi, let seq = sequences[sequence] else { return 0 }
        return seq.quantizedBlocks * layout.blockSize
    }

    public func record(sequence: Int, position: Int, token: Int32) {
        guard let seq = sequences[sequence] else { return }
        if position == seq.tokens.count { seq.tokens.append(token) } else if position < seq.tokens.count { seq.tokens[position] = token }
    }

    public func commit(sequence: Int, length: Int) {
        guard let seq = sequences[sequence] else { return }
        seq.length = length
        seq.reserved = max(seq.reserved, length)
        let bs = layout.blockSize
        if kivi { quantizeOldBlocks(seq) }
        // Name newly filled blocks for prefix reuse (KIVI: once quantized).
        if prefixCachingEnabled, seq.tokens.count >= length {
            while seq.hashes.count < (kivi ? seq.quantizedBlocks : length / bs) {
                let bi = seq.hashes.count
                let toks = Array(seq.tokens[bi * bs..<(bi + 1) * bs])
                let h = Self.blockHash(parent: seq.hashes.last ?? 0, tokens: toks, adapter: seq.adapter)
                seq.hashes.append(h)
                for (g, group) in groups.enumerated() {
                    let b = seq.tables[g][bi]
                    if group.hash[Int(b)] == nil && group.byHash[h] == nil {
                        group.hash[Int(b)] = h
                        group.blockTokens[Int(b)] = toks
                        group.byHash[h] = b
                    }
                }
            }
        }
        // Sliding windows: release blocks no future query can see.
        for (g, group) in groups.enumerated() {
            guard let w = group.window else { continue }
            let firstVisible = max(0, length - w + 1)
            for bi in 0..<min(seq.tables[g].count, firstVisible / bs) where seq.tables[g][bi] >= 0 {
                decref(g, seq.tables[g][bi])
                seq.tables[g][bi] = -1
            }
        }
    }

    // MARK: sequences

    /// FNV-1a-style 64-bit chained hash of a full block (parent hash, tokens, adapter).
    static func blockHash(parent: UInt64, tokens: [Int32], adapter: UInt64) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ parent
        func mix(_ v: UInt64) {
            var x = v
            for _ in 0..<8 { h = (h ^ (x & 0xFF)) &* 0x0000_0100_0000_01B3; x >>= 8 }
        }
        mix(adapter)
        for t in tokens { mix(UInt64(UInt32(bitPattern: t))) }
        return h
    }

    public func contains(_ sequence: Int) -> Bool { sequences[sequence] != nil }
    public var sequenceIDs: [Int] { Array(sequences.keys) }
    /// A sequence's record (tokens, adapter, block tables); for state export/import.
    func sequenceRecord(_ sequence: Int) -> Sequence? { sequences[sequence] }

    /// For a new (empty) sequence: attaches the cached blocks of the longest cached
    /// prefix of `prompt` (at most prompt.count - 1 tokens, so the last prompt token is
    /// always computed) and returns how many positions it now holds.
    @discardableResult
    public func attachPrefix(sequence: Int, prompt: [Int32], adapter: UInt64 = 0) throws -> Int {
        guard sequences[sequence] == nil || sequences[sequence]!.length == 0 else {
            throw BatchCoreError.badState("sequence \(sequence) is not empty")
        }
        let seq = sequences[sequence] ?? Sequence(groups: groups.count)
        seq.adapter = adapter
        sequences[sequence] = seq
        queryTokens += prompt.count
        guard prefixCachingEnabled else { return 0 }
        let bs = layout.blockSize
        var parent: UInt64 = 0
        var matched = 0
        // KIVI: the prompt's R most recent positions are computed, in f32.
        let computed = kivi ? max(1, layout.kiviResidual) : 1
        while (matched + 1) * bs <= prompt.count - computed {
            let toks = Array(prompt[matched * bs..<(matched + 1) * bs])
            let h = Self.blockHash(parent: parent, tokens: toks, adapter: adapter)
            var blocks: [Int32] = []
            for group in groups {
                guard let b = group.byHash[h], group.blockTokens[Int(b)] == toks else { break }
                blocks.append(b)
            }
            guard blocks.count == groups.count else { break }
            for (g, b) in blocks.enumerated() { incref(g, b); seq.tables[g].append(b) }
            seq.hashes.append(h)
            parent = h
            matched += 1
        }
        seq.length = matched * bs
        seq.reserved = max(seq.reserved, seq.length)
        seq.quantizedBlocks = kivi ? matched : 0
        seq.tokens = Array(prompt[0..<seq.length])
        hitTokens += seq.length
        return seq.length
    }

    /// A child sequence sharing all of the parent's blocks (copy-on-write).
    public func fork(parent: Int, child: Int) throws {
        guard let p = sequences[parent] else { throw BatchCoreError.invalid("sequence \(parent) does not exist") }
        guard sequences[child] == nil else { throw BatchCoreError.invalid("sequence \(child) already exists") }
        let c = Sequence(groups: groups.count)
        if kivi {
            // The child's own copy of the parent's committed residual rows.
            let bs = layout.blockSize
            let rows = p.length - p.quantizedBlocks * bs
            let cap = (rows + bs - 1) / bs * bs
            guard cap * residualRowBytes <= budgetBytes - allocatedBytes + reclaimableBytes else {
                throw BatchCoreError(.kvFull, "KV cache full: forking sequence \(parent) needs \(cap * residualRowBytes) bytes of KIVI residual")
            }
            guard makeRoom(cap * residualRowBytes), resizeResidual(c, rows: cap, keep: 0) else {
                throw BatchCoreError(.outOfMemory, "cannot allocate a KIVI residual buffer")
            }
            for g in groups.indices where rows > 0 {
                for pl in 0..<2 * groups[g].layers.count {
                    (c.residual[g]! + pl * cap * kvDim).update(from: p.residual[g]! + pl * p.residualCapacity * kvDim, count: rows * kvDim)
                }
            }
            c.quantizedBlocks = p.quantizedBlocks
        }
        c.length = p.length
        c.reserved = p.length
        c.tokens = p.tokens
        c.tables = p.tables
        c.adapter = p.adapter
        c.hashes = p.hashes
        for (g, t) in c.tables.enumerated() { for b in t where b >= 0 { incref(g, b) } }
        sequences[child] = c
    }

    /// Keeps the first `length` positions of a sequence, dropping the rest.
    public func truncate(sequence: Int, length: Int) throws {
        guard let seq = sequences[sequence] else { throw BatchCoreError.invalid("sequence \(sequence) does not exist") }
        guard length >= 0 else { throw BatchCoreError.invalid("length must be >= 0") }
        guard length < seq.length else { return }
        let bs = layout.blockSize
        let keep = (length + bs - 1) / bs
        if kivi, length < seq.quantizedBlocks * bs {
            // Cut inside the quantized part: the kept rows of the cut block are
            // dequantized into the (emptied) residual.
            let nb = length / bs, rows = length - nb * bs
            let cap = max(seq.residualCapacity, (rows + bs - 1) / bs * bs)
            let extra = (cap - seq.residualCapacity) * residualRowBytes
            guard extra <= budgetBytes - allocatedBytes + reclaimableBytes else {
                throw BatchCoreError(.kvFull, "KV cache full: truncating sequence \(sequence) into a quantized block needs \(extra) bytes of KIVI residual")
            }
            if cap > seq.residualCapacity {
                guard makeRoom(extra), resizeResidual(seq, rows: cap, keep: 0) else {
                    throw BatchCoreError(.outOfMemory, "cannot allocate a KIVI residual buffer")
                }
            }
            if rows > 0 {
                for (g, group) in groups.enumerated() {
                    let b = nb < seq.tables[g].count ? seq.tables[g][nb] : -1
                    for li in group.layers.indices {
                        let k = residualPlane(seq, g, li, value: false), v = residualPlane(seq, g, li, value: true)
                        if b >= 0 {
                            KIVICodec.decodeKeys(planePointer(g, block: b, index: li, value: false), rows: rows, dim: kvDim,
                                                 blockSize: bs, bits: layout.storage.kiviBits, into: k)
                            KIVICodec.decodeValues(planePointer(g, block: b, index: li, value: true), rows: rows, dim: kvDim,
                                                   blockSize: bs, bits: layout.storage.kiviBits, into: v)
                        } else {  // released by a sliding window: no query can see it
                            k.update(repeating: 0, count: rows * kvDim)
                            v.update(repeating: 0, count: rows * kvDim)
                        }
                    }
                }
            }
            seq.quantizedBlocks = nb
        }
        for g in groups.indices {
            while seq.tables[g].count > keep {
                let b = seq.tables[g].removeLast()
                if b >= 0 { decref(g, b) }
            }
            // A kept partial block will be rewritten: it no longer holds the named
            // tokens' KV, so it leaves the prefix cache (a shared one is copied on write).
            if length % bs != 0, let b = seq.tables[g].last, b >= 0, groups[g].refcount[Int(b)] == 1,
               let h = groups[g].hash[Int(b)] {
                if groups[g].byHash[h] == b { groups[g].byHash[h] = nil }
                groups[g].hash[Int(b)] = nil
                groups[g].blockTokens[Int(b)] = []
            }
        }
        seq.length = length
        seq.reserved = length
        seq.tokens = Array(seq.tokens.prefix(length))
        seq.hashes = Array(seq.hashes.prefix(length / bs))
    }

    /// Frees a sequence; its full, named blocks stay cached for reuse.
    public func remove(sequence: Int) {
        guard let seq = sequences.removeValue(forKey: sequence) else { return }
        for (g, t) in seq.tables.enumerated() { for b in t where b >= 0 { decref(g, b) } }
        if seq.residualCapacity > 0 { _ = resizeResidual(seq, rows: 0, keep: 0) }
    }

    public func stats() -> KVStats {
        var s = KVStats()
        for group in groups {
            let used = group.refcount.filter { $0 > 0 }.count
            s.blocksUsed += used
            s.blocksCached += group.cachedCount
            s.bytesUsed += used * group.blockBytes
        }
        let perBlockSet = groups.reduce(0) { $0 + $1.blockBytes }
        s.blocksTotal = (budgetBytes - residualBytes) / perBlockSet * groups.count
        s.blocksFree = s.blocksTotal - s.blocksUsed - s.blocksCached
        s.bytesTotal = budgetBytes
        s.residualBytes = residualBytes
        s.bytesUsed += residualBytes
        s.bytesPerToken = bytesPerToken
        s.sequences = sequences.count
        s.tokens = sequences.values.reduce(0) { $0 + $1.length }
        s.prefixHitTokens = hitTokens
        s.prefixQueryTokens = queryTokens
        return s
    }
}

/// Row codecs of the KV storage types.
enum KVCodec {
    static func encode(_ x: UnsafePointer<Float>, _ n: Int, _ type: KVStorageType, into dst: UnsafeMutableRawPointer) {
        switch type {
        case .f32:
            dst.copyMemory(from: x, byteCount: n * 4)
        case .f16:
            let d = dst.assumingMemoryBound(to: Float16.self)
            for i in 0..<n { d[i] = Float16(x[i]) }
        case .kivi4, .kivi2:
            preconditionFailure("KIVI storage is encoded per block (KIVICodec)")
        case .int8:
            var m: Float = 0
            for i in 0..<n { m = max(m, abs(x[i])) }
            let scale = m / 127
            dst.storeBytes(of: scale, as: Float.self)
            let q = (dst + 4).assumingMemoryBound(to: Int8.self)
            // A code never traps: a NaN quotient (non-finite input) codes as 0, others saturate.
            func code(_ t: Float) -> Int8 {
                let r = t.rounded(.toNearestOrEven)
                return r.isNaN ? 0 : Int8(Swift.max(-128, Swift.min(127, r)))
            }
            let inv: Float = scale > 0 ? 1 / scale : 0
            if inv.isFinite {
                for i in 0..<n { q[i] = code(x[i] * inv) }
            } else {  // a subnormal scale: 1/scale overflows, divide instead
                for i in 0..<n { q[i] = code(x[i] / scale) }
            }
        }
    }

    static func decode(_ src: UnsafeRawPointer, _ n: Int, _ type: KVStorageType, into y: UnsafeMutablePointer<Float>) {
        switch type {
        case .f32:
            UnsafeMutableRawPointer(y).copyMemory(from: src, byteCount: n * 4)
        case .f16:
            let s = src.assumingMemoryBound(to: Float16.self)
            for i in 0..<n { y[i] = Float(s[i]) }
        case .int8:
            let scale = src.load(as: Float.self)
            let q = (src + 4).assumingMemoryBound(to: Int8.self)
            for i in 0..<n { y[i] = Float(q[i]) * scale }
        case .kivi4, .kivi2:
            preconditionFailure("KIVI storage is decoded per block (KIVICodec)")
        }
    }
}
