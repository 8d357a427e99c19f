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
                for seg in try cache.segments(layer: 0, sequence: s, length: r.rows.count) {
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

    // MARK: batch reservations (defect 2 of issue 11)

    /// The layouts a batch reservation must plan: row-wise f32 and int8, KIVI (blocks +
    /// residual), sliding windows (two block groups, releases), shared layers.
    static let reserveLayouts: [(String, KVLayout)] = [
        ("f32", .full(layerCount: 3, storage: .f32, blockSize: 4)),
        ("int8", .full(layerCount: 3, storage: .int8, blockSize: 4)),
        ("kivi4", .full(layerCount: 3, storage: .kivi4, blockSize: 4, kiviResidual: 6)),
        ("sliding", KVLayout(layers: [.full, .sliding(window: 6), .sliding(window: 6)], storage: .f32, blockSize: 4)),
        ("shared", KVLayout(layers: [.full, .shared(source: 0), .sliding(window: 5), .shared(source: 2)], storage: .f32, blockSize: 4)),
    ]

    /// Everything a caller can observe: statistics, sequences with their lengths, and the
    /// rows every layer's segments hold.
    static func snapshot(_ cache: PagedKVCache, dim: Int) throws -> (KVStats, [Int: Int], [Int: [[Float]]]) {
        var lengths: [Int: Int] = [:], rows: [Int: [[Float]]] = [:]
        for s in cache.sequenceIDs {
            let len = cache.length(of: s)
            lengths[s] = len
            var got: [[Float]] = []
            for l in 0..<cache.layout.layers.count {
                for seg in try cache.segments(layer: l, sequence: s, length: len) {
                    got.append([Float(l), Float(seg.start), Float(seg.count)])
                    got.append(Array(UnsafeBufferPointer(start: seg.keys, count: seg.count * dim)))
                    got.append(Array(UnsafeBufferPointer(start: seg.values, count: seg.count * dim)))
                }
            }
            rows[s] = got
        }
        return (cache.stats(), lengths, rows)
    }

    /// Random multi-sequence batches (new sequences, growth of forked sequences sharing
    /// blocks, prefix-cached blocks to evict) against a small budget, in every layout:
    /// `canReserve` answers exactly whether `reserve` succeeds, and a failed reserve
    /// leaves statistics, sequences, lengths and every cached row as they were.
    @Test(arguments: 0..<5)
    func batchReserveIsAllOrNothing(_ layoutIndex: Int) throws {
        let (name, layout) = Self.reserveLayouts[layoutIndex]
        let dim = 32, bs = layout.blockSize
        let probe = try PagedKVCache(kvDim: dim, layout: layout, budgetBytes: 1 << 30)
        let cache = try PagedKVCache(kvDim: dim, layout: layout, budgetBytes: probe.bytesPerToken * bs * 24 + 4 * 40 * dim)
        var rng = SplitMix64(state: 0xBA7C4 + UInt64(layoutIndex))
        func rnd(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        var nextID = 0
        var succeeded = 0, failed = 0, shared = 0
        for step in 0..<1500 {
            let ids = cache.sequenceIDs.sorted()
            let op = rnd(10)
            if op < 2, !ids.isEmpty {
                let s = ids[rnd(ids.count)]
                cache.remove(sequence: s)
                continue
            }
            if op < 3, !ids.isEmpty {
                let s = ids[rnd(ids.count)]
                do { try cache.fork(parent: s, child: nextID); nextID += 1; shared += 1 } catch let e as BatchCoreError {
                    #expect(e.kind == .kvFull)  // KIVI: the residual copy may not fit
                }
                continue
            }
            // A batch of 1...3 sequences, existing or new, each growing by 1...9 positions.
            var growth: [KVGrowth] = []
            for _ in 0..<(1 + rnd(3)) {
                let s = ids.isEmpty || rnd(3) == 0 ? nextID + rnd(2) : ids[rnd(ids.count)]
                if growth.contains(where: { $0.sequence == s }) { continue }
                growth.append(KVGrowth(sequence: s, length: cache.length(of: s) + 1 + rnd(9)))
            }
            let before = try Self.snapshot(cache, dim: dim)
            let predicted = cache.canReserve(growth)
            // Whether one sequence could ever fit (asked by the engine at submit) is the
            // answer of an empty cache of the same shape and budget, whatever this one holds.
            let alone = 1 + rnd(bs * 30)
            let empty = try PagedKVCache(kvDim: dim, layout: layout, budgetBytes: cache.budgetBytes)
            var emptyFits = true
            do { try empty.reserve([KVGrowth(sequence: 7, length: alone)]) } catch let e as BatchCoreError {
                #expect(e.kind == .kvFull)
                emptyFits = false
            }
            #expect(cache.fitsAlone(length: alone) == emptyFits, "\(name) step \(step): fitsAlone(\(alone)) != \(emptyFits)")
            #expect(try Self.snapshot(cache, dim: dim) == before, "\(name) step \(step): canReserve changed the cache")
            do {
                try cache.reserve(growth)
                #expect(predicted, "\(name) step \(step): canReserve said no, reserve succeeded")
                succeeded += 1
            } catch let e as BatchCoreError {
                #expect(e.kind == .kvFull, "\(name) step \(step): \(e)")
                #expect(!predicted, "\(name) step \(step): canReserve said yes, reserve failed")
                let after = try Self.snapshot(cache, dim: dim)
                #expect(after.0 == before.0, "\(name) step \(step): stats changed by a failed reserve")
                #expect(after.1 == before.1, "\(name) step \(step): sequences or lengths changed by a failed reserve")
                #expect(after.2 == before.2, "\(name) step \(step): rows changed by a failed reserve")
                failed += 1
                if after != before { return }
                // Make room as an engine would (preempt one).
                if rnd(2) == 0, !ids.isEmpty { cache.remove(sequence: ids[rnd(ids.count)]) }
                continue
            }
            for g in growth {
                let s = g.sequence
                nextID = max(nextID, s + 1)
                let len = cache.length(of: s)
                for p in len..<g.length {
                    for l in 0..<layout.layers.count {
                        let k = (0..<dim).map { Float(s * 1000 + p) + Float($0) * 0.01 + Float(l) }
                        let v = k.map { $0 + 0.5 }
                        cache.write(layer: l, sequence: s, position: p, keys: k, values: v)
                    }
                    cache.record(sequence: s, position: p, token: Int32(p % 2))
                }
                cache.commit(sequence: s, length: g.length)
            }
            let st = cache.stats()
            #expect(st.blocksUsed + st.blocksCached + st.blocksFree == st.blocksTotal, "\(name) step \(step)")
        }
        print("\(name): \(succeeded) reservations, \(failed) refused, \(shared) forks")
        #expect(succeeded > 100 && failed > 100, "\(name): both outcomes must occur often")
    }

    /// A host allocation failing inside a reservation (fault injection through
    /// `Memory.withFailingAllocations`: blocks, int8 decoding scratch, KIVI residual) is
    /// `.outOfMemory` and changes nothing.
    @Test(arguments: 0..<5)
    func failedAllocationInReserveChangesNothing(_ layoutIndex: Int) throws {
        let (name, layout) = Self.reserveLayouts[layoutIndex]
        let dim = 32
        let cache = try PagedKVCache(kvDim: dim, layout: layout, budgetBytes: 1 << 24)
        try cache.reserve([KVGrowth(sequence: 0, length: 5)])
        for p in 0..<5 {
            for l in 0..<layout.layers.count {
                let k = (0..<dim).map { Float(p * 100 + l) + Float($0) * 0.25 }
                cache.write(layer: l, sequence: 0, position: p, keys: k, values: k.map { -$0 })
            }
        }
        cache.commit(sequence: 0, length: 5)
        let before = try Self.snapshot(cache, dim: dim)
        let growth = [KVGrowth(sequence: 0, length: 23), KVGrowth(sequence: 1, length: 17)]
        #expect(cache.canReserve(growth))
        do {
            try Memory.withFailingAllocations({ _ in true }) { try cache.reserve(growth) }
            Issue.record("\(name): reserve succeeded although every allocation failed")
        } catch let e as BatchCoreError {
            #expect(e.kind == .outOfMemory, "\(name): \(e)")
        }
        #expect(try Self.snapshot(cache, dim: dim) == before, "\(name): a failed reserve changed the cache")
        #expect(!cache.contains(1))
        try cache.reserve(growth)
        #expect(cache.contains(1) && cache.stats().blocksUsed > before.0.blocksUsed)
    }

    /// Defect 4 of issue 11: the int8 cache's gather needs decoding scratch; when that
    /// allocation fails the forward pass throws `.outOfMemory` and changes nothing
    /// (before, the gather swallowed the failure, returned fewer segments and attention
    /// ran over uninitialized scores). The same batch then gives the logits of an
    /// unfaulted run.
    @Test(.enabled(if: TestModel.available)) func failedGatherAllocationFailsTheForward() throws {
        let model = try TestModel.shared()
        let c = model.config
        func prompt(_ s: Int, _ n: Int) -> [Int32] { (0..<n).map { Int32(300 + s * 97 + $0 * 11) } }
        func prefill(_ cache: KVCache) throws {
            var batch = TokenBatch()
            for s in 0..<2 { for (i, t) in prompt(s, 20).enumerated() { batch.append(t, position: i, sequence: s, logits: false) } }
            try model.forward(batch, cache: cache, logits: nil)
        }
        // Both sequences grow into a third block: the gather needs more scratch.
        var grow = TokenBatch()
        for s in 0..<2 { for i in 20..<36 { grow.append(Int32(700 + s * 5 + i), position: i, sequence: s, logits: i == 35) } }
        let layout = KVLayout.full(layerCount: c.layerCount, storage: .int8)
        let cache = try PagedKVCache(kvDim: c.kvDim, layout: layout, budgetBytes: 64 << 20)
        try prefill(cache)
        let stats = cache.stats()
        var logits = [Float](repeating: 0, count: 2 * c.vocabSize)
        do {
            try Memory.withFailingAllocations({ _ in true }) {
                try logits.withUnsafeMutableBufferPointer { try model.forward(grow, cache: cache, logits: $0.baseAddress) }
            }
            Issue.record("the forward succeeded although the gather could not allocate")
        } catch let e as BatchCoreError {
            #expect(e.kind == .outOfMemory)
        }
        #expect(cache.stats() == stats)
        #expect(cache.length(of: 0) == 20 && cache.length(of: 1) == 20)
        try logits.withUnsafeMutableBufferPointer { try model.forward(grow, cache: cache, logits: $0.baseAddress) }
        let reference = try PagedKVCache(kvDim: c.kvDim, layout: layout, budgetBytes: 64 << 20)
        try prefill(reference)
        var want = [Float](repeating: 0, count: 2 * c.vocabSize)
        try want.withUnsafeMutableBufferPointer { try model.forward(grow, cache: reference, logits: $0.baseAddress) }
        #expect(logits == want)
        #expect(logits.allSatisfy { $0.isFinite })
    }

    /// A sliding-window layer releases blocks no query can see; truncating back into them
    /// is refused (`.badState`, nothing changed) — before, the next write of the kept
    /// partial block indexed block -1. A cut the window still covers works, exactly.
    @Test func truncateIntoReleasedWindowBlocksIsRefused() throws {
        let dim = 8, bs = 4
        let layout = KVLayout(layers: [.full, .sliding(window: 6)], storage: .f32, blockSize: bs)
        let cache = try PagedKVCache(kvDim: dim, layout: layout, budgetBytes: 1 << 20)
        func row(_ p: Int, _ l: Int) -> [Float] { (0..<dim).map { Float(p * 10 + l) + Float($0) * 0.125 } }
        func append(_ to: Int) throws {
            let from = cache.length(of: 0)
            try cache.reserve([KVGrowth(sequence: 0, length: to)])
            for p in from..<to { for l in 0..<2 { cache.write(layer: l, sequence: 0, position: p, keys: row(p, l), values: row(p, l)) } }
            cache.commit(sequence: 0, length: to)
        }
        try append(20)  // the window layer keeps blocks from (20 - 6 + 1) / 4 = 3 on
        let before = try Self.snapshot(cache, dim: dim)
        #expect(throws: BatchCoreError.self) { try cache.truncate(sequence: 0, length: 10) }
        #expect(try Self.snapshot(cache, dim: dim) == before)
        try cache.truncate(sequence: 0, length: 19)  // needs blocks 3 and 4: held
        try append(21)
        let segs = try cache.segments(layer: 1, sequence: 0, length: 21)
        var got: [Int: [Float]] = [:]
        for s in segs { for j in 0..<s.count { got[s.start + j] = Array(UnsafeBufferPointer(start: s.keys + j * dim, count: dim)) } }
        for p in (21 - 6 + 1)..<21 { #expect(got[p] == row(p, 1), "position \(p)") }  // what the next query sees
    }
}
