import BCCore
import BCKV
import BCModel
import Foundation
import Testing

/// The paged KV manager: invariants under random operation sequences, copy-on-write,
/// prefix reuse, and exact equality of model outputs with the contiguous cache.
@Suite struct PagedKVTests {
    /// A reference model of one sequence: the rows it holds, in order.
    struct Ref { var rows: [[Float]] = [] }

    static func row(_ seq: Int, _ pos: Int, _ salt: Float, _ dim: Int) -> [Float] {
        (0..<dim).map { Float(seq * 1000 + pos) + Float($0) * 0.001 + salt }
    }

    /// Thousands of random create/append/fork/trim/free operations against a reference
    /// model; after every operation: contents equal, used + cached + free == total, no
    /// block is owned more than its refcount says (checked through stats), CoW never
    /// changes another sequence.
    @Test(arguments: [KVStorageType.f32])
    func randomOperationsKeepInvariants(_ storage: KVStorageType) throws {
        var rng = SystemRandomNumberGenerator()
        let dim = 8, layers = 2, bs = 4
        let layout = KVLayout.full(layerCount: layers, storage: storage, blockSize: bs)
        let blockBytes = 2 * layers * bs * dim * 4
        let cache = try PagedKVCache(kvDim: dim, layout: layout, budgetBytes: blockBytes * 40)
        var ref: [Int: Ref] = [:]
        var nextID = 0
        var kvFullSeen = 0
        for step in 0..<3000 {
            let op = Int.random(in: 0..<10, using: &rng)
            let ids = Array(ref.keys)
            if op < 2 || ids.isEmpty {
                ref[nextID] = Ref()
                try cache.attachPrefix(sequence: nextID, prompt: [1])  // registers an empty sequence
                nextID += 1
            } else if op < 6 {
                let s = ids.randomElement(using: &rng)!
                let n = Int.random(in: 1...6, using: &rng)
                let len = cache.length(of: s)
                do {
                    try cache.reserve(sequence: s, length: len + n)
                    for p in len..<len + n {
                        for l in 0..<layers {
                            let k = Self.row(s, p, Float(l), dim), v = Self.row(s, p, Float(l) + 0.5, dim)
                            cache.write(layer: l, sequence: s, position: p, keys: k, values: v)
                        }
                        cache.record(sequence: s, position: p, token: Int32(p % 3))
                        ref[s]!.rows.append(Self.row(s, p, 0, dim))
                    }
                    cache.commit(sequence: s, length: len + n)
                } catch let e as BatchCoreError {
                    #expect(e.kind == .kvFull)
                    kvFullSeen += 1
                    #expect(cache.length(of: s) == len)
                }
            } else if op < 7 {
                let s = ids.randomElement(using: &rng)!
                let stats = cache.stats()
                do {
                    try cache.fork(parent: s, child: nextID)
                    ref[nextID] = ref[s]
                    nextID += 1
                } catch { Issue.record("fork failed: \(error)") }
                #expect(cache.stats().blocksUsed == stats.blocksUsed)  // forks share, allocate nothing
            } else if op < 8 {
                let s = ids.randomElement(using: &rng)!
                let len = cache.length(of: s)
                let keep = Int.random(in: 0...max(0, len), using: &rng)
                try cache.truncate(sequence: s, length: keep)
                ref[s]!.rows = Array(ref[s]!.rows.prefix(keep))
            } else {
                let s = ids.randomElement(using: &rng)!
                cache.remove(sequence: s)
                ref[s] = nil
            }
            // Invariants.
            let st = cache.stats()
            #expect(st.blocksUsed + st.blocksCached + st.blocksFree == st.blocksTotal, "step \(step)")
            #expect(st.blocksFree >= 0)
            for (s, r) in ref {
                #expect(cache.length(of: s) == r.rows.count, "step \(step) seq \(s)")
                // Contents of layer 0 keys: every row as written (through CoW and sharing).
                var got: [[Float]] = []
                for seg in cache.segments(layer: 0, sequence: s, length: r.rows.count) {
                    for j in 0..<seg.count { got.append(Array(UnsafeBufferPointer(start: seg.keys + j * dim, count: dim))) }
                }
                #expect(got == r.rows, "step \(step) seq \(s) contents differ")
                if got != r.rows { return }
            }
        }
        #expect(kvFullSeen > 0, "the budget should have been exhausted at least once")
    }

    /// Paged attention (f32) against the contiguous cache, for a batched prefill of two
    /// sequences and decode steps: decode steps are bit-identical given identical caches
    /// (same per-position summation order); a multi-token prefill sums P·V per 16-token
    /// block instead of in one sgemm, so logits agree to <= 1e-5 relative (max |diff| /
    /// max |logit|). A prompt served from the prefix cache gives the logits of computing it.
    @Test(.enabled(if: TestModel.available)) func pagedEqualsContiguousOnTheModel() throws {
        let model = try TestModel.shared()
        let c = model.config
        let prompts: [[Int32]] = [(0..<37).map { Int32(100 + $0 * 7) }, (0..<21).map { Int32(900 + $0 * 3) }]
        func run(_ cache: KVCache) throws -> [[Float]] {
            var batch = TokenBatch()
            for (s, p) in prompts.enumerated() {
                for (i, t) in p.enumerated() { batch.append(t, position: i, sequence: s, logits: i == p.count - 1) }
            }
            var out: [[Float]] = []
            var logits = [Float](repeating: 0, count: 2 * c.vocabSize)
            try logits.withUnsafeMutableBufferPointer { try model.forward(batch, cache: cache, logits: $0.baseAddress) }
            out.append(logits)
            for step in 0..<5 {
                var b = TokenBatch()
                for (s, p) in prompts.enumerated() { b.append(Int32(500 + step), position: p.count + step, sequence: s, logits: true) }
                try logits.withUnsafeMutableBufferPointer { try model.forward(b, cache: cache, logits: $0.baseAddress) }
                out.append(logits)
            }
            return out
        }
        func relative(_ a: [Float], _ b: [Float]) -> Double {
            var d: Float = 0, m: Float = 0
            for i in a.indices { d = max(d, abs(a[i] - b[i])); m = max(m, abs(b[i])) }
            return Double(d / m)
        }
        let contiguous = try run(ContiguousKVCache(layerCount: c.layerCount, kvDim: c.kvDim, maxLength: 4096))
        let paged = try PagedKVCache(kvDim: c.kvDim, layout: .full(layerCount: c.layerCount), budgetBytes: 64 << 20)
        let pagedOut = try run(paged)
        let worst = zip(pagedOut, contiguous).map { relative($0, $1) }.max()!
        print("paged vs contiguous: worst relative logits difference \(worst)")
        #expect(worst <= 1e-5)

        // Prefix reuse: a new sequence with prompt 0's tokens reuses 2 full blocks (32 tokens).
        let reused = try paged.attachPrefix(sequence: 7, prompt: prompts[0])
        #expect(reused == 32)
        var batch = TokenBatch()
        for i in reused..<prompts[0].count { batch.append(prompts[0][i], position: i, sequence: 7, logits: i == prompts[0].count - 1) }
        var logits = [Float](repeating: 0, count: c.vocabSize)
        try logits.withUnsafeMutableBufferPointer { try model.forward(batch, cache: paged, logits: $0.baseAddress) }
        let reuse = relative(logits, Array(pagedOut[0][0..<c.vocabSize]))
        print("prefix reuse vs computing: relative logits difference \(reuse)")
        #expect(reuse <= 1e-5)
    }
}
