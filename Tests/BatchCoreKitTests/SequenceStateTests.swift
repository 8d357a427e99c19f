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
}
