import BCCore
import BCKernels
#if canImport(Glibc)
import Glibc
#endif

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
/// The parts: `BlockPool` per layer group (blocks, reference counts, free list, the
/// `BlockLRU` of cached blocks, the `PrefixIndex` naming full blocks), `KVSequence`
/// (block tables, tokens, `KIVIResidual`), `KVReservationPlan` (what a batch
/// reservation does, planned before anything changes), `KVRowCodec` / `KIVICodec`
/// (storage encodings), `KVStats`. This type composes them and keeps the budget.
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
package final class PagedKVCache: KVCache {
    package let kvDim: Int
    package let layout: KVLayout
    package let budgetBytes: Int
    package let maxLength: Int
    package var blockSize: Int { layout.blockSize }
    package var prefixCachingEnabled: Bool

    /// One pool per layer group (storing layers with the same window share blocks).
    let pools: [BlockPool]
    /// The layer groups (what the sequence state reads: each group's window).
    var groups: [BlockPool] { pools }
    /// Storing layers per group.
    let layersPerGroup: [Int]
    /// layer → (group, index within group); shared layers map to their source.
    private var layerSlot: [(group: Int, index: Int)] = []
    var sequences: [Int: KVSequence] = [:]
    /// Bytes charged to the budget: blocks with memory and KIVI residuals.
    var allocatedBytes = 0
    /// KIVI: bytes of all residual buffers (part of allocatedBytes).
    var residualBytes = 0
    private var hitTokens = 0, queryTokens = 0
    /// Dequantized rows for quantized storage (segments of the last call); sized by
    /// `reserve` for the batch it reserves, so a step's gathers do not allocate.
    var scratch: UnsafeMutablePointer<Float>?
    var scratchCount = 0
    /// Bytes of one layer's key / value plane in a block.
    private let keyPlaneBytes: Int, valuePlaneBytes: Int
    /// The row encoding (nil for the KIVI types, which quantize whole blocks).
    private let rowType: KVRowType?
    var kivi: Bool { layout.storage.isKIVI }
    /// Bytes of one KIVI residual row over all groups.
    let residualRowBytes: Int

    package init(kvDim: Int, layout: KVLayout, budgetBytes: Int, maxLength: Int = Int.max, prefixCaching: Bool = true) throws {
        try layout.validate()
        guard kvDim > 0, kvDim <= 1 << 20 else { throw BatchCoreError.invalid("kvDim \(kvDim) out of range 1...1048576") }
        guard budgetBytes > 0 else { throw BatchCoreError.invalid("KV budget must be > 0 bytes") }
        self.kvDim = kvDim
        self.layout = layout
        self.budgetBytes = budgetBytes
        self.maxLength = maxLength
        let storing = layout.storingGroups
        // Prefix reuse needs every position of every stored layer: only without windows.
        prefixCachingEnabled = prefixCaching && storing.allSatisfy { $0.window == nil }
        rowType = layout.storage.rowType
        keyPlaneBytes = layout.storage.planeBytes(dim: kvDim, blockSize: layout.blockSize, value: false)
        valuePlaneBytes = layout.storage.planeBytes(dim: kvDim, blockSize: layout.blockSize, value: true)
        var pools: [BlockPool] = []
        for g in storing {
            let bytes = (g.layers.count * (keyPlaneBytes + valuePlaneBytes) + 63) / 64 * 64
            pools.append(BlockPool(window: g.window, layers: g.layers, blockBytes: bytes))
        }
        self.pools = pools
        layersPerGroup = pools.map(\.layers.count)
        residualRowBytes = KIVIResidual.rowBytes(layersPerGroup: layersPerGroup, kvDim: kvDim)
        layerSlot = Array(repeating: (0, 0), count: layout.layers.count)
        for (gi, g) in pools.enumerated() { for (li, l) in g.layers.enumerated() { layerSlot[l] = (gi, li) } }
        for (l, kind) in layout.layers.enumerated() { if case .shared(let s) = kind { layerSlot[l] = layerSlot[s] } }
        guard budgetBytes >= pools.reduce(0, { $0 + $1.blockBytes }) else {
            throw BatchCoreError.invalid("KV budget of \(budgetBytes) bytes holds less than one block")
        }
    }

    deinit { free(scratch) }

    /// Bytes of KV per token over all groups (what one more token of context costs).
    package var bytesPerToken: Int { pools.reduce(0) { $0 + $1.blockBytes } / layout.blockSize }

    // MARK: KVCache

    package func length(of sequence: Int) -> Int { sequences[sequence]?.length ?? 0 }

    package func window(layer: Int) -> Int? { layout.window(of: layer) }

    /// Makes room for the batch, all or nothing (see `KVReservationPlan`): throws
    /// `.kvFull` when it does not fit, `.outOfMemory` when the host allocator fails,
    /// having changed nothing.
    package func reserve(_ growth: [KVGrowth]) throws {
        try execute(try plan(growth))
    }

    package func canReserve(_ growth: [KVGrowth]) -> Bool { planSucceeds(growth, onEmptyCache: false) }

    /// Whether one sequence of `length` positions fits in an EMPTY cache of this shape and
    /// budget, i.e. whether it could ever run here (the engine refuses it at submit
    /// otherwise). Reads only the layout and budget: the same answer in any state.
    package func fitsAlone(length: Int) -> Bool {
        planSucceeds([KVGrowth(sequence: 0, length: length)], onEmptyCache: true)
    }

    /// Whether `plan(growth, onEmptyCache:)` exists (the failure's reason is not needed).
    private func planSucceeds(_ growth: [KVGrowth], onEmptyCache: Bool) -> Bool {
        do {
            _ = try plan(growth, onEmptyCache: onEmptyCache)
            return true
        } catch {
            return false
        }
    }

    /// Bytes that freeing free-listed and evicting cached blocks would give back.
    private var reclaimableBytes: Int { pools.reduce(0) { $0 + ($1.freeCount + $1.cachedCount) * $1.blockBytes } }

    /// Frees free-listed blocks' memory, then evicts cached blocks (least recently used
    /// first), until `bytes` more fit in the budget; returns whether they do. Callers
    /// check `reclaimableBytes` first when they must not change anything on failure.
    private func makeRoom(_ bytes: Int) -> Bool {
        for pool in pools {
            while budgetBytes - allocatedBytes < bytes, pool.freeCount > 0 { allocatedBytes -= pool.releaseFree() }
        }
        for pool in pools {
            while budgetBytes - allocatedBytes < bytes, pool.evictOldest() { allocatedBytes -= pool.releaseFree() }
        }
        return budgetBytes - allocatedBytes >= bytes
    }

    /// Replaces a sequence's residual with `fresh` buffers of `rows` rows (from
    /// `KIVIResidual.allocate`), keeping its first `keep` rows; charges the difference.
    private func installResidual(_ seq: KVSequence, _ fresh: [UnsafeMutablePointer<Float>?], rows: Int, keep: Int) {
        let delta = (rows - seq.residual.capacity) * residualRowBytes
        seq.residual.install(fresh, rows: rows, keep: keep)
        allocatedBytes += delta
        residualBytes += delta
    }

    /// Grows (or creates) a sequence's residual to `rows` rows, keeping `keep` rows,
    /// making budget room first; throws `.kvFull` (budget) or `.outOfMemory` (host)
    /// having changed nothing.
    private func growResidual(_ seq: KVSequence, rows: Int, keep: Int, _ what: String) throws {
        let extra = (rows - seq.residual.capacity) * residualRowBytes
        guard extra <= budgetBytes - allocatedBytes + reclaimableBytes else {
            throw BatchCoreError(.kvFull, "KV cache full: \(what) needs \(extra) bytes of KIVI residual")
        }
        let fresh = try KIVIResidual.allocate(rows: rows, layersPerGroup: layersPerGroup, kvDim: kvDim)
        _ = makeRoom(extra)  // fits: checked above
        installResidual(seq, fresh, rows: rows, keep: keep)
    }

    /// Quantizes every block that is full and entirely older than the R most recent
    /// positions, then drops its rows from the residual.
    private func quantizeOldBlocks(_ seq: KVSequence) {
        let bs = layout.blockSize, bits = layout.storage.kiviBits
        let first = seq.quantizedBlocks
        var q = first
        while (q + 1) * bs + layout.kiviResidual <= seq.length { q += 1 }
        guard q > first else { return }
        for blk in first..<q {
            let off = (blk - first) * bs * kvDim
            for (g, pool) in pools.enumerated() where blk < seq.tables[g].count {
                guard let b = seq.tables[g][blk] else { continue }
                for li in pool.layers.indices {
                    KIVICodec.encodeKeys(seq.residual.plane(g, li, value: false) + off, dim: kvDim, blockSize: bs, bits: bits,
                                         into: planePointer(pool, block: b, index: li, value: false))
                    KIVICodec.encodeValues(seq.residual.plane(g, li, value: true) + off, count: bs, dim: kvDim, blockSize: bs,
                                           bits: bits, into: planePointer(pool, block: b, index: li, value: true))
                }
            }
        }
        let remain = max(0, seq.reserved - q * bs)
        seq.residual.dropFront((q - first) * bs, remain: remain)
        seq.quantizedBlocks = q
        // Give back what a long prefill needed; keep R + blockSize rows for decoding.
        let steady = (layout.kiviResidual + 2 * bs - 1) / bs * bs
        let target = max((remain + bs - 1) / bs * bs, min(seq.residual.capacity, steady))
        if target < seq.residual.capacity {
            do {
                let fresh = try KIVIResidual.allocate(rows: target, layersPerGroup: layersPerGroup, kvDim: kvDim)
                installResidual(seq, fresh, rows: target, keep: remain)
            } catch {
                // Shrinking is optional: when the host cannot give the smaller buffer,
                // the sequence keeps the larger one (still charged, still correct).
            }
        }
    }

    /// One layer's key or value plane in a block: [K planes per layer][V planes per layer].
    @inline(__always)
    private func planePointer(_ pool: BlockPool, block: BlockID, index li: Int, value: Bool) -> UnsafeMutableRawPointer {
        pool.pointer(block) + (value ? pool.layers.count * keyPlaneBytes + li * valuePlaneBytes : li * keyPlaneBytes)
    }

    package func write(layer: Int, sequence: Int, position: Int, keys: UnsafePointer<Float>, values: UnsafePointer<Float>) {
        guard layer >= 0, layer < layerSlot.count, let seq = sequences[sequence], position >= 0 else { return }
        if case .shared = layout.layers[layer] { return }
        let (g, li) = layerSlot[layer]
        guard let rowType else {
            // KIVI: into the residual.
            let r = position - seq.quantizedBlocks * layout.blockSize
            guard r >= 0, r < seq.residual.capacity else { return }
            (seq.residual.plane(g, li, value: false) + r * kvDim).update(from: keys, count: kvDim)
            (seq.residual.plane(g, li, value: true) + r * kvDim).update(from: values, count: kvDim)
            return
        }
        let bi = position / layout.blockSize
        guard bi < seq.tables[g].count, let b = seq.tables[g][bi] else { return }
        let pool = pools[g]
        let row = (position % layout.blockSize) * rowType.rowBytes(kvDim)
        KVRowCodec.encode(keys, kvDim, rowType, into: planePointer(pool, block: b, index: li, value: false) + row)
        KVRowCodec.encode(values, kvDim, rowType, into: planePointer(pool, block: b, index: li, value: true) + row)
    }

    package var segmentsStayValid: Bool { rowType == .f32 }

    package func blockIdentities(layer: Int, sequence: Int, length: Int) -> [(start: Int, count: Int, block: Int)] {
        guard layer >= 0, layer < layerSlot.count, let seq = sequences[sequence], length > 0 else { return [] }
        let table = seq.tables[layerSlot[layer].group], bs = layout.blockSize
        var blocks = min((length + bs - 1) / bs, table.count)
        if kivi { blocks = min(blocks, seq.quantizedBlocks) }
        return (0..<blocks).compactMap { bi in table[bi].map { (bi * bs, min(bs, length - bi * bs), Int($0)) } }
    }

    /// Makes the dequantization scratch hold `floats`; throws `.outOfMemory` when the
    /// host cannot (the old scratch is kept).
    private func ensureScratch(_ floats: Int) throws -> UnsafeMutablePointer<Float> {
        if let scratch, floats <= scratchCount { return scratch }
        let fresh = try Memory.allocateFloats(max(floats, 1), fill: 0)
        free(scratch)
        scratch = fresh
        scratchCount = max(floats, 1)
        return fresh
    }

    package func segments(layer: Int, sequence: Int, length: Int) throws -> [KVSegment] {
        guard layer >= 0, layer < layerSlot.count, let seq = sequences[sequence], length > 0 else { return [] }
        let (g, li) = layerSlot[layer]
        guard let rowType else { return try kiviSegments(seq, g, li, length) }
        let bs = layout.blockSize
        let table = seq.tables[g]
        let pool = pools[g]
        let blocks = min((length + bs - 1) / bs, table.count)
        var out: [KVSegment] = []
        out.reserveCapacity(blocks)
        if rowType == .f32 {
            for bi in 0..<blocks {
                guard let b = table[bi] else { continue }
                let k = planePointer(pool, block: b, index: li, value: false), v = planePointer(pool, block: b, index: li, value: true)
                out.append(KVSegment(keys: k.assumingMemoryBound(to: Float.self), values: v.assumingMemoryBound(to: Float.self),
                                     start: bi * bs, count: min(bs, length - bi * bs)))
            }
            return out
        }
        guard blocks > 0 else { return [] }
        let scratch = try ensureScratch(blocks * bs * kvDim * 2)
        let rb = rowType.rowBytes(kvDim), dim = kvDim
        var sources: [(k: UnsafeMutableRawPointer, v: UnsafeMutableRawPointer)] = []
        sources.reserveCapacity(blocks)
        for bi in 0..<blocks {
            guard let b = table[bi] else { continue }
            let count = min(bs, length - bi * bs)
            sources.append((planePointer(pool, block: b, index: li, value: false), planePointer(pool, block: b, index: li, value: true)))
            let kd = scratch + bi * bs * dim * 2
            out.append(KVSegment(keys: kd, values: kd + bs * dim, start: bi * bs, count: count))
        }
        // Decoding reads the whole stored prefix once per layer and step: the blocks are
        // split over the threads (each value decoded exactly; the split changes no bit).
        out.withUnsafeBufferPointer { segs in
            sources.withUnsafeBufferPointer { src in
                Parallel.forEach(segs.count) { i in
                    let seg = segs[i], k = src[i].k, v = src[i].v
                    let kd = UnsafeMutablePointer(mutating: seg.keys), vd = UnsafeMutablePointer(mutating: seg.values)
                    for r in 0..<seg.count {
                        KVRowCodec.decode(UnsafeRawPointer(k + r * rb), dim, rowType, into: kd + r * dim)
                        KVRowCodec.decode(UnsafeRawPointer(v + r * rb), dim, rowType, into: vd + r * dim)
                    }
                }
            }
        }
        return out
    }

    /// KIVI: quantized blocks dequantized into the scratch, then the residual in place.
    private func kiviSegments(_ seq: KVSequence, _ g: Int, _ li: Int, _ length: Int) throws -> [KVSegment] {
        let bs = layout.blockSize, bits = layout.storage.kiviBits
        let start = seq.quantizedBlocks * bs
        let blocks = min(seq.quantizedBlocks, (length + bs - 1) / bs, seq.tables[g].count)
        var out: [KVSegment] = []
        if blocks > 0 {
            let scratch = try ensureScratch(blocks * bs * kvDim * 2)
            let pool = pools[g]
            for bi in 0..<blocks {
                guard let b = seq.tables[g][bi] else { continue }
                let count = min(bs, length - bi * bs)
                let kd = scratch + bi * bs * kvDim * 2, vd = kd + bs * kvDim
                KIVICodec.decodeKeys(planePointer(pool, block: b, index: li, value: false), rows: count, dim: kvDim,
                                     blockSize: bs, bits: bits, into: kd)
                KIVICodec.decodeValues(planePointer(pool, block: b, index: li, value: true), rows: count, dim: kvDim,
                                       blockSize: bs, bits: bits, into: vd)
                out.append(KVSegment(keys: kd, values: vd, start: bi * bs, count: count))
            }
        }
        let count = min(length - start, seq.residual.capacity)
        if count > 0 {
            out.append(KVSegment(keys: seq.residual.plane(g, li, value: false), values: seq.residual.plane(g, li, value: true),
                                 start: start, count: count))
        }
        return out
    }

    /// KIVI: positions `0..<quantizedLength` of a sequence are stored quantized, the
    /// rest in the float32 residual (0 for other storage types).
    package func quantizedLength(of sequence: Int) -> Int {
        guard kivi, let seq = sequences[sequence] else { return 0 }
        return seq.quantizedBlocks * layout.blockSize
    }

    package func record(sequence: Int, position: Int, token: Int32) {
        guard let seq = sequences[sequence], position >= 0 else { return }
        if position == seq.tokens.count { seq.tokens.append(token) } else if position < seq.tokens.count { seq.tokens[position] = token }
    }

    package func commit(sequence: Int, length: Int) {
        guard let seq = sequences[sequence], length >= 0, length <= seq.reserved || length <= seq.length else { return }
        seq.length = length
        seq.reserved = max(seq.reserved, length)
        let bs = layout.blockSize
        if kivi { quantizeOldBlocks(seq) }
        // Name newly filled blocks for prefix reuse (KIVI: once quantized).
        if prefixCachingEnabled, seq.tokens.count >= length {
            while seq.hashes.count < (kivi ? seq.quantizedBlocks : length / bs) {
                let bi = seq.hashes.count
                let toks = Array(seq.tokens[bi * bs..<(bi + 1) * bs])
                let h = PrefixIndex.blockHash(parent: seq.hashes.last ?? 0, tokens: toks, adapter: seq.adapter)
                seq.hashes.append(h)
                for (g, pool) in pools.enumerated() {
                    if bi < seq.tables[g].count, let b = seq.tables[g][bi] { pool.name(b, hash: h, tokens: toks) }
                }
            }
        }
        // Sliding windows: release blocks no future query can see.
        for (g, pool) in pools.enumerated() {
            guard let w = pool.window else { continue }
            let firstVisible = max(0, length - w + 1)
            for bi in 0..<min(seq.tables[g].count, firstVisible / bs) {
                guard let b = seq.tables[g][bi] else { continue }
                pool.decref(b, keepNamed: prefixCachingEnabled)
                seq.tables[g][bi] = nil
            }
        }
    }

    // MARK: sequences

    package func contains(_ sequence: Int) -> Bool { sequences[sequence] != nil }
    package var sequenceIDs: [Int] { Array(sequences.keys) }
    /// A sequence's record (tokens, adapter, block tables); for state export/import.
    func sequenceRecord(_ sequence: Int) -> KVSequence? { sequences[sequence] }

    /// For a new (empty) sequence: attaches the cached blocks of the longest cached
    /// prefix of `prompt` (at most prompt.count - 1 tokens, so the last prompt token is
    /// always computed) and returns how many positions it now holds. A sequence that
    /// holds anything (positions, or room reserved for them) is refused with `.badState`.
    @discardableResult
    package func attachPrefix(sequence: Int, prompt: [Int32], adapter: UInt64 = 0) throws -> Int {
        if let existing = sequences[sequence], !existing.isEmpty {
            throw BatchCoreError.badState("sequence \(sequence) is not empty")
        }
        let seq = sequences[sequence] ?? KVSequence(layersPerGroup: layersPerGroup, kvDim: kvDim)
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
            let h = PrefixIndex.blockHash(parent: parent, tokens: toks, adapter: adapter)
            var blocks: [BlockID] = []
            for pool in pools {
                guard let b = pool.index.lookup(h, tokens: toks) else { break }
                blocks.append(b)
            }
            guard blocks.count == pools.count else { break }
            for (g, b) in blocks.enumerated() { pools[g].incref(b); seq.tables[g].append(b) }
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
    package func fork(parent: Int, child: Int) throws {
        guard let p = sequences[parent] else { throw BatchCoreError.invalid("sequence \(parent) does not exist") }
        guard sequences[child] == nil else { throw BatchCoreError.invalid("sequence \(child) already exists") }
        let c = KVSequence(layersPerGroup: layersPerGroup, kvDim: kvDim)
        if kivi {
            // The child's own copy of the parent's committed residual rows.
            let bs = layout.blockSize
            let rows = p.length - p.quantizedBlocks * bs
            let cap = (rows + bs - 1) / bs * bs
            try growResidual(c, rows: cap, keep: 0, "forking sequence \(parent)")
            for g in pools.indices where rows > 0 {
                for li in 0..<pools[g].layers.count {
                    for value in [false, true] {
                        c.residual.plane(g, li, value: value).update(from: p.residual.plane(g, li, value: value), count: rows * kvDim)
                    }
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
        for (g, t) in c.tables.enumerated() { for case let b? in t { pools[g].incref(b) } }
        sequences[child] = c
    }

    /// Keeps the first `length` positions of a sequence, dropping the rest. A sliding-
    /// window layer cannot go back to positions it released (`.badState`).
    package func truncate(sequence: Int, length: Int) throws {
        guard let seq = sequences[sequence] else { throw BatchCoreError.invalid("sequence \(sequence) does not exist") }
        guard length >= 0 else { throw BatchCoreError.invalid("length must be >= 0") }
        guard length < seq.length else { return }
        let bs = layout.blockSize
        let keep = (length + bs - 1) / bs
        // The next query (at `length`) must see every position of its window.
        for (g, pool) in pools.enumerated() {
            guard let w = pool.window, length > 0 else { continue }
            let first = max(0, length - w + 1) / bs
            if (first..<keep).contains(where: { $0 >= seq.tables[g].count || seq.tables[g][$0] == nil }) {
                throw BatchCoreError.badState("sequence \(sequence): a sliding-window layer released positions the query at \(length) needs; it cannot be truncated to \(length)")
            }
        }
        if kivi, length < seq.quantizedBlocks * bs {
            // Cut inside the quantized part: the kept rows of the cut block are
            // dequantized into the (emptied) residual.
            let nb = length / bs, rows = length - nb * bs
            let cap = max(seq.residual.capacity, (rows + bs - 1) / bs * bs)
            if cap > seq.residual.capacity {
                try growResidual(seq, rows: cap, keep: 0, "truncating sequence \(sequence) into a quantized block")
            }
            if rows > 0 {
                for (g, pool) in pools.enumerated() {
                    let b = nb < seq.tables[g].count ? seq.tables[g][nb] : nil
                    for li in pool.layers.indices {
                        let k = seq.residual.plane(g, li, value: false), v = seq.residual.plane(g, li, value: true)
                        if let b {
                            KIVICodec.decodeKeys(planePointer(pool, block: b, index: li, value: false), rows: rows, dim: kvDim,
                                                 blockSize: bs, bits: layout.storage.kiviBits, into: k)
                            KIVICodec.decodeValues(planePointer(pool, block: b, index: li, value: true), rows: rows, dim: kvDim,
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
        for (g, pool) in pools.enumerated() {
            while seq.tables[g].count > keep {
                if let b = seq.tables[g].removeLast() { pool.decref(b, keepNamed: prefixCachingEnabled) }
            }
            // A kept partial block will be rewritten: it no longer holds the named
            // tokens' KV, so it leaves the prefix cache (a shared one is copied on write).
            if length % bs != 0, let last = seq.tables[g].last, let b = last, pool.references(b) == 1 {
                pool.forgetName(b)
            }
        }
        seq.length = length
        seq.reserved = length
        seq.tokens = Array(seq.tokens.prefix(length))
        seq.hashes = Array(seq.hashes.prefix(length / bs))
    }

    /// Frees a sequence; its full, named blocks stay cached for reuse.
    package func remove(sequence: Int) {
        guard let seq = sequences.removeValue(forKey: sequence) else { return }
        for (g, t) in seq.tables.enumerated() { for case let b? in t { pools[g].decref(b, keepNamed: prefixCachingEnabled) } }
        if seq.residual.capacity > 0 { installResidual(seq, Array(repeating: nil, count: pools.count), rows: 0, keep: 0) }
    }

    package func stats() -> KVStats {
        var s = KVStats()
        for pool in pools {
            s.blocksUsed += pool.usedCount
            s.blocksCached += pool.cachedCount
            s.bytesUsed += pool.usedCount * pool.blockBytes
        }
        let perBlockSet = pools.reduce(0) { $0 + $1.blockBytes }
        s.blocksTotal = (budgetBytes - residualBytes) / perBlockSet * pools.count
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
