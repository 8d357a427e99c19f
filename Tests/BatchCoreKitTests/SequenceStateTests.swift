import BCCore
import BCKV
import Testing

/// Sequence state export/import of the paged KV cache, without a model: synthetic
/// rows round-trip exactly, windows and shared layers, mismatches and corruption.
@Suite struct SequenceStateTests {
    static let model = KVModelFingerprint(vocabSize: 100, layerCount: 4, embeddingDim: 32)
    static let dim = 8

    static func row(_ layer: Int, _ pos: Int, _ v: Bool) -> [Float] {
        (0..<dim).map { Float(layer * 1000 + pos) + Float($0) * 0.01 + (v ? 0.5 : 0) }
    }

    /// Appends positions [from, to) to a sequence, like a decode would.
    static func fill(_ cache: PagedKVCache, _ seq: Int, _ from: Int, _ to: Int) throws {
        try cache.reserve(sequence: seq, length: to)
        for p in from..<to {
            for l in 0..<cache.layout.layers.count {
                cache.write(layer: l, sequence: seq, position: p, keys: row(l, p, false), values: row(l, p, true))
            }
            cache.record(sequence: seq, position: p, token: Int32(p % 97))
        }
        cache.commit(sequence: seq, length: to)
    }

    static func rows(_ cache: PagedKVCache, _ seq: Int, layer: Int) throws -> [Int: [Float]] {
        var out: [Int: [Float]] = [:]
        for s in try cache.segments(layer: layer, sequence: seq, length: cache.length(of: seq)) {
            for r in 0..<s.count {
                out[s.start + r] = Array(UnsafeBufferPointer(start: s.keys + r * dim, count: dim))
                    + Array(UnsafeBufferPointer(start: s.values + r * dim, count: dim))
            }
        }
        return out
    }

    static let layouts: [KVLayout] = [
        .full(layerCount: 4),
        KVLayout(layers: [.full, .sliding(window: 6), .shared(source: 1), .shared(source: 0)], storage: .f32, blockSize: 4),
        .full(layerCount: 4, storage: .f16, blockSize: 8),
    ]

    @Test(arguments: [0, 1, 2])
    func roundTripIsExact(_ which: Int) throws {
        let layout = Self.layouts[which]
        let a = try PagedKVCache(kvDim: Self.dim, layout: layout, budgetBytes: 1 << 20)
        try Self.fill(a, 3, 0, 23)
        try Self.fill(a, 3, 23, 30)
        let state = try a.saveSequenceState(3, model: Self.model)
        #expect(state.count == (try a.sequenceStateSize(3, model: Self.model)))
        let b = try PagedKVCache(kvDim: Self.dim, layout: layout, budgetBytes: 1 << 20)
        try state.withUnsafeBytes { try b.loadSequenceState(7, from: $0, model: Self.model) }
        #expect(b.length(of: 7) == 30)
        for l in 0..<4 { #expect(try Self.rows(a, 3, layer: l) == Self.rows(b, 7, layer: l)) }
        #expect(try b.saveSequenceState(7, model: Self.model) == state)
        // Continuing both gives the same rows.
        try Self.fill(a, 3, 30, 41)
        try Self.fill(b, 7, 30, 41)
        for l in 0..<4 { #expect(try Self.rows(a, 3, layer: l) == Self.rows(b, 7, layer: l)) }
        #expect(a.stats().bytesUsed == b.stats().bytesUsed)
    }

    @Test func mismatchAndCorruptionChangeNothing() throws {
        let a = try PagedKVCache(kvDim: Self.dim, layout: .full(layerCount: 4), budgetBytes: 1 << 20)
        try Self.fill(a, 0, 0, 20)
        let state = try a.saveSequenceState(0, model: Self.model)
        func load(_ c: PagedKVCache, _ bytes: [UInt8], model: KVModelFingerprint = Self.model) -> BatchCoreError.Kind? {
            do { try bytes.withUnsafeBytes { try c.loadSequenceState(1, from: $0, model: model) } } catch let e as BatchCoreError {
                return e.kind
            } catch { return .internal }
            return nil
        }
        let b = try PagedKVCache(kvDim: Self.dim, layout: .full(layerCount: 4), budgetBytes: 1 << 20)
        for i in stride(from: 0, to: state.count, by: 7) {
            var bad = state
            bad[i] ^= 0x20
            #expect(load(b, bad) == .format)
        }
        #expect(load(b, Array(state.dropLast())) == .format)
        #expect(load(b, state, model: KVModelFingerprint(vocabSize: 100, layerCount: 4, embeddingDim: 64)) == .format)
        #expect(!b.contains(1) && b.stats().blocksUsed == 0)
        for other in [KVLayout.full(layerCount: 4, storage: .int8), .full(layerCount: 4, blockSize: 8),
                      KVLayout(layers: [.full, .full, .full, .shared(source: 2)])] {
            let c = try PagedKVCache(kvDim: Self.dim, layout: other, budgetBytes: 1 << 20)
            #expect(load(c, state) == .format)
            #expect(!c.contains(1))
        }
        let wide = try PagedKVCache(kvDim: 2 * Self.dim, layout: .full(layerCount: 4), budgetBytes: 1 << 20)
        #expect(load(wide, state) == .format)
        // No room: one block of budget for a two-block sequence.
        let blockBytes = 2 * 4 * 16 * Self.dim * 4
        let small = try PagedKVCache(kvDim: Self.dim, layout: .full(layerCount: 4), budgetBytes: blockBytes)
        #expect(load(small, state) == .kvFull)
        #expect(!small.contains(1) && small.stats().blocksUsed == 0)
        // Not empty.
        try Self.fill(b, 1, 0, 3)
        #expect(load(b, state) == .badState)
        #expect(b.length(of: 1) == 3)
        #expect(throws: BatchCoreError.self) { _ = try a.saveSequenceState(9, model: Self.model) }
    }

    @Test func loadedBlocksServeAsPrefix() throws {
        let a = try PagedKVCache(kvDim: Self.dim, layout: .full(layerCount: 4), budgetBytes: 1 << 20)
        try Self.fill(a, 0, 0, 40)
        let state = try a.saveSequenceState(0, model: Self.model)
        let b = try PagedKVCache(kvDim: Self.dim, layout: .full(layerCount: 4), budgetBytes: 1 << 20)
        try state.withUnsafeBytes { try b.loadSequenceState(0, from: $0, model: Self.model) }
        let prompt = (0..<40).map { Int32($0 % 97) }
        #expect(try b.attachPrefix(sequence: 1, prompt: prompt) == 32)
    }

    // MARK: hostile states with a valid checksum (issue 11, defect 3)

    /// `bytes` with its trailing CRC-32 recomputed over everything before it.
    static func resealed(_ bytes: [UInt8]) -> [UInt8] {
        var b = Array(bytes.dropLast(4))
        let crc = CRC32.checksum(b)
        for k in 0..<4 { b.append(UInt8(truncatingIfNeeded: crc >> (8 * UInt32(k)))) }
        return b
    }

    static func put32(_ b: inout [UInt8], _ offset: Int, _ v: UInt32) {
        for k in 0..<4 { b[offset + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(k))) }
    }

    static func put64(_ b: inout [UInt8], _ offset: Int, _ v: UInt64) {
        for k in 0..<8 { b[offset + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(k))) }
    }

    static func get32(_ b: [UInt8], _ offset: Int) -> UInt32 {
        (0..<4).reduce(0) { $0 | UInt32(b[offset + $1]) << (8 * UInt32($1)) }
    }

    static func get64(_ b: [UInt8], _ offset: Int) -> UInt64 {
        (0..<8).reduce(0) { $0 | UInt64(b[offset + $1]) << (8 * UInt64($1)) }
    }

    /// The error kind a load gives, nil when it succeeds.
    static func loadKind(_ c: PagedKVCache, _ seq: Int, _ bytes: [UInt8]) -> BatchCoreError.Kind? {
        do { try bytes.withUnsafeBytes { try c.loadSequenceState(seq, from: $0, model: model) } } catch let e as BatchCoreError {
            return e.message.isEmpty ? .internal : e.kind
        } catch { return .internal }
        return nil
    }

    /// Everything a failed load must leave as it was: statistics, which sequences
    /// exist, and each one's saved state (tokens, rows, adapter id).
    static func snapshot(_ c: PagedKVCache) throws -> (KVStats, [Int], [[UInt8]]) {
        let ids = c.sequenceIDs.sorted()
        return (c.stats(), ids, try ids.map { try c.saveSequenceState($0, model: model) })
    }

    /// Byte offsets in a state of a 4-layer layout whose layers all store rows.
    struct Offsets {
        let length: Int
        let fingerprint = 12
        var adapter: Int { fingerprint + 4 * 7 + 8 * 4 }
        var count: Int { adapter + 8 }
        func token(_ i: Int) -> Int { count + 4 + 4 * i }
        /// Offset of layer l's "first position" field (rows start right after it).
        func first(_ l: Int) -> Int { token(length) + l * (4 + 2 * length * dim * 4) }
        func key(_ l: Int, _ pos: Int, _ i: Int) -> Int { first(l) + 4 + (pos * dim + i) * 4 }
    }

    @Test(arguments: [KVStorageType.f32, .f16, .int8])
    func hostileFieldsWithValidChecksumAreRejected(_ storage: KVStorageType) throws {
        let layout = KVLayout.full(layerCount: 4, storage: storage, blockSize: 8)
        let length = 20
        let a = try PagedKVCache(kvDim: Self.dim, layout: layout, budgetBytes: 1 << 20)
        try Self.fill(a, 0, 0, length)
        let good = try a.saveSequenceState(0, model: Self.model)
        let o = Offsets(length: length)
        #expect(good.count == o.first(4) + 4)
        #expect(Self.get32(good, o.count) == UInt32(length))
        #expect(Self.get32(good, o.first(3)) == 0)

        // The target holds another sequence and an empty one with an adapter id (the load target).
        let b = try PagedKVCache(kvDim: Self.dim, layout: layout, budgetBytes: 1 << 20, maxLength: 64)
        try Self.fill(b, 5, 0, 11)
        try b.attachPrefix(sequence: 1, prompt: [], adapter: 0xABCD)
        let before = try Self.snapshot(b)

        var cases: [(String, [UInt8], Set<BatchCoreError.Kind>)] = []
        func variant(_ name: String, _ kinds: Set<BatchCoreError.Kind> = [.format], _ edit: (inout [UInt8]) -> Void) {
            var bad = good
            edit(&bad)
            cases.append((name, Self.resealed(bad), kinds))
        }
        variant("version 2") { Self.put32(&$0, 8, 2) }
        variant("n_vocab") { Self.put32(&$0, o.fingerprint, 101) }
        variant("kv dim 0") { Self.put32(&$0, o.fingerprint + 12, 0) }
        variant("storage type 99") { Self.put32(&$0, o.fingerprint + 16, 99) }
        variant("block size 0") { Self.put32(&$0, o.fingerprint + 20, 0) }
        variant("layer count 2^32-1") { Self.put32(&$0, o.fingerprint + 24, .max) }
        variant("layer kind 7") { Self.put32(&$0, o.fingerprint + 28, 7) }
        variant("length 2^32-1", [.kvFull, .format]) { Self.put32(&$0, o.count, .max) }
        variant("length beyond the context", [.kvFull]) { Self.put32(&$0, o.count, 65) }
        variant("length + 1") { Self.put32(&$0, o.count, UInt32(length + 1)) }
        variant("length - 1") { Self.put32(&$0, o.count, UInt32(length - 1)) }
        variant("token = n_vocab") { Self.put32(&$0, o.token(3), 100) }
        variant("token -1") { Self.put32(&$0, o.token(0), .max) }
        variant("token INT32_MIN") { Self.put32(&$0, o.token(length - 1), 0x8000_0000) }
        variant("first position 1 of a full layer") { Self.put32(&$0, o.first(2), 1) }
        variant("first position 2^32-1") { Self.put32(&$0, o.first(0), .max) }
        variant("NaN key") { Self.put32(&$0, o.key(1, 4, 3), Float.nan.bitPattern) }
        variant("+Inf key") { Self.put32(&$0, o.key(0, 0, 0), Float.infinity.bitPattern) }
        variant("-Inf value") { Self.put32(&$0, o.key(3, length + 2, 1), (-Float.infinity).bitPattern) }
        if storage == .f16 {
            // Beyond float16's range (65504): would be stored as Inf.
            variant("key 1e6 in f16 storage") { Self.put32(&$0, o.key(2, 7, 5), Float(1e6).bitPattern) }
            variant("value -70000 in f16 storage") { Self.put32(&$0, o.key(0, length + 9, 0), Float(-70000).bitPattern) }
        }
        variant("4 trailing bytes") { $0.insert(contentsOf: [1, 2, 3, 4], at: $0.count - 4) }
        variant("last row missing") { $0.removeSubrange($0.count - 4 - Self.dim * 4..<$0.count - 4) }
        #expect(cases.count >= 21)

        for (name, bad, kinds) in cases {
            let kind = Self.loadKind(b, 1, bad)
            #expect(kind.map { kinds.contains($0) } == true, "\(storage): \(name): got \(String(describing: kind))")
            let after = try Self.snapshot(b)
            #expect(after.0 == before.0 && after.1 == before.1 && after.2 == before.2, "\(storage): \(name) changed the cache")
        }

        // Positive controls: any adapter id is a caller's value; the f16 limit itself loads.
        var other = good
        Self.put64(&other, o.adapter, .max)
        if storage == .f16 { Self.put32(&other, o.key(1, 0, 0), Float(65504).bitPattern) }
        other = Self.resealed(other)
        #expect(Self.loadKind(b, 9, other) == nil)
        #expect(try b.saveSequenceState(9, model: Self.model) == other)
        #expect(Self.loadKind(b, 1, good) == nil)
        #expect(try b.saveSequenceState(1, model: Self.model) == good)
    }

    /// A load that runs out of room part-way (a windowed layout fills block by block)
    /// leaves the target exactly as it was: an existing empty sequence keeps its
    /// adapter id, statistics and other sequences are unchanged.
    @Test func failedWindowedLoadLeavesTargetAsItWas() throws {
        let layout = KVLayout(layers: [.full, .sliding(window: 6), .shared(source: 1), .shared(source: 0)],
                              storage: .f32, blockSize: 4)
        let a = try PagedKVCache(kvDim: Self.dim, layout: layout, budgetBytes: 1 << 20)
        try Self.fill(a, 0, 0, 30)
        let state = try a.saveSequenceState(0, model: Self.model)
        var partial = 0
        var budget = 1024
        while budget < 1 << 16 {
            defer { budget += 256 }
            guard let b = try? PagedKVCache(kvDim: Self.dim, layout: layout, budgetBytes: budget) else { continue }
            try Self.fill(b, 5, 0, 2)
            try b.attachPrefix(sequence: 1, prompt: [], adapter: 0xABCD)
            let before = try Self.snapshot(b)
            let kind = Self.loadKind(b, 1, state)
            if kind == nil { break }
            #expect(kind == .kvFull)
            let after = try Self.snapshot(b)
            #expect(after.0 == before.0 && after.1 == before.1 && after.2 == before.2, "budget \(budget)")
            // The same state into an absent sequence: it stays absent.
            #expect(Self.loadKind(b, 2, state) == .kvFull)
            #expect(!b.contains(2) && b.stats() == before.0)
            if budget >= 4 * layout.blockSize * 2 * Self.dim * 4 * 2 { partial += 1 }  // room for more than a block
        }
        #expect(partial > 0)
        #expect(budget < 1 << 16)  // a budget large enough did load
    }

    /// int8 storage re-encodes loaded rows; rows of tiny (subnormal-scale) values must
    /// not trap the codec (1/scale overflowed to Inf, then Int(NaN or Inf) trapped).
    @Test func int8RowsOfTinyValuesLoad() throws {
        let layout = KVLayout.full(layerCount: 4, storage: .int8, blockSize: 8)
        let a = try PagedKVCache(kvDim: Self.dim, layout: layout, budgetBytes: 1 << 20)
        try Self.fill(a, 0, 0, 12)
        var state = try a.saveSequenceState(0, model: Self.model)
        let o = Offsets(length: 12)
        // Mostly subnormal; the largest (≈ 2e-38) gives the subnormal scale max/127.
        let tiny: [Float] = [0.01, -0.25, 0.85, 0, 4e-7, 0.1, -0.001, 1.7].map { $0 * Float.leastNormalMagnitude }
        for i in 0..<Self.dim { Self.put32(&state, o.key(1, 3, i), tiny[i].bitPattern) }
        state = Self.resealed(state)
        let b = try PagedKVCache(kvDim: Self.dim, layout: layout, budgetBytes: 1 << 20)
        #expect(Self.loadKind(b, 0, state) == nil)
        // int8 keeps x ≈ q·max|x|/127: the row's error is at most max|x|/127 (+ underflow to 0).
        let row = try Self.rows(b, 0, layer: 1)[3] ?? []
        #expect(row.count == 2 * Self.dim)
        for i in 0..<min(row.count, Self.dim) {
            #expect(row[i].isFinite && abs(row[i] - tiny[i]) <= 2e-38 / 127 + Float.leastNonzeroMagnitude * 2)
        }
    }
}
