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
        init(groups: Int) { tables = Array(repeating: [], count: groups) }
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
        let rowBytes = layout.storage.rowBytes(kvDim)
        for g in storing {
            let bytes = (2 * g.layers.count * layout.blockSize * rowBytes + 63) / 64 * 64
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
        sequences[sequence] = seq
    }

    private func rollback(_ created: [(Int, Int32)]) {
        // Only reached when the host allocator fails inside the budget; blocks made so
        // far are returned to the free lists (tables keep at most extra capacity).
        for (g, b) in created { groups[g].refcount[Int(b)] = 0; groups[g].freeList.append(b) }
    }

    @inline(__always)
    private func rowPointer(_ g: Int, block: Int32, index li: Int, row: Int, value: Bool) -> UnsafeMutableRawPointer {
        let group = groups[g]
        let rb = layout.storage.rowBytes(kvDim)
        let plane = (value ? group.layers.count : 0) + li
        return group.memory[Int(block)] + (plane * layout.blockSize + row) * rb
    }

    public func write(layer: Int, sequence: Int, position: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>) {
        guard isStoring(layer), let seq = sequences[sequence] else { return }
        let (g, li) = layerSlot[layer]
        let b = seq.tables[g][position / layout.blockSize]
        let row = position % layout.blockSize
        KVCodec.encode(keys, kvDim, layout.storage, into: rowPointer(g, block: b, index: li, row: row, value: false))
        KVCodec.encode(values, kvDim, layout.storage, into: rowPointer(g, block: b, index: li, row: row, value: true))
    }

    public func segments(layer: Int, sequence: Int, length: Int) -> [KVSegment] {
        guard let seq = sequences[sequence], length > 0 else { return [] }
        let (g, li) = layerSlot[layer]
        let bs = layout.blockSize
        let table = seq.tables[g]
        let blocks = (length + bs - 1) / bs
        var out: [KVSegment] = []
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

    public func record(sequence: Int, position: Int, token: Int32) {
        guard let seq = sequences[sequence] else { return }
        if position == seq.tokens.count { seq.tokens.append(token) } else if position < seq.tokens.count { seq.tokens[position] = token }
    }

    public func commit(sequence: Int, length: Int) {
        guard let seq = sequences[sequence] else { return }
        seq.length = length
        let bs = layout.blockSize
        // Name newly filled blocks for prefix reuse.
        if prefixCachingEnabled, seq.tokens.count >= length {
            while seq.hashes.count < length / bs {
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
        while (matched + 1) * bs <= prompt.count - 1 {
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
        seq.tokens = Array(prompt[0..<seq.length])
        hitTokens += seq.length
        return seq.length
    }

    /// A child sequence sharing all of the parent's blocks (copy-on-write).
    public func fork(parent: Int, child: Int) throws {
        guard let p = sequences[parent] else { throw BatchCoreError.invalid("sequence \(parent) does not exist") }
        guard sequences[child] == nil else { throw BatchCoreError.invalid("sequence \(child) already exists") }
        let c = Sequence(groups: groups.count)
        c.length = p.length
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
        for g in groups.indices {
            while seq.tables[g].count > keep {
                let b = seq.tables[g].removeLast()
                if b >= 0 { decref(g, b) }
            }
        }
        seq.length = length
        seq.tokens = Array(seq.tokens.prefix(length))
        seq.hashes = Array(seq.hashes.prefix(length / bs))
    }

    /// Frees a sequence; its full, named blocks stay cached for reuse.
    public func remove(sequence: Int) {
        guard let seq = sequences.removeValue(forKey: sequence) else { return }
        for (g, t) in seq.tables.enumerated() { for b in t where b >= 0 { decref(g, b) } }
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
        s.blocksTotal = budgetBytes / perBlockSet * groups.count
        s.blocksFree = s.blocksTotal - s.blocksUsed - s.blocksCached
        s.bytesTotal = budgetBytes
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
        case .int8:
            var m: Float = 0
            for i in 0..<n { m = max(m, abs(x[i])) }
            let scale = m / 127
            dst.storeBytes(of: scale, as: Float.self)
            let q = (dst + 4).assumingMemoryBound(to: Int8.self)
            let inv: Float = scale > 0 ? 1 / scale : 0
            for i in 0..<n { q[i] = Int8(clamping: Int((x[i] * inv).rounded(.toNearestOrEven))) }
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
        }
    }
}
