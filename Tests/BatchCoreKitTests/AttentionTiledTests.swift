import BCKV
import BCModel
import BCCore
import BCKernels
import Foundation
import Testing

/// The tiled multi-row attention kernel (`Attention.rows`, prompt chunks) against the
/// per-row kernel (`Attention.group`) and float64, and the serving forward that uses it
/// for every block of a sequence's rows.
@Suite struct AttentionTiledTests {
    static func random(_ n: Int) -> [Float] {
        var g = SystemRandomNumberGenerator()
        return (0..<n).map { _ in Float.random(in: -1...1, using: &g) }
    }

    /// Attention.rows over `queries` (rows of q [R × heads·hd] reading positions
    /// ranges[r]) split into blocks of `blockRows`, in one output buffer [R × heads·hd].
    static func tiled(_ q: [Float], _ ranges: [(lo: Int, visible: Int)], heads: Int, hd: Int, kv: KVView,
                      offset: Int, blockRows: Int) -> [Float] {
        var out = [Float](repeating: .nan, count: ranges.count * heads * hd)
        let scale = 1 / Float(hd).squareRoot()
        q.withUnsafeBufferPointer { qb in
            out.withUnsafeMutableBufferPointer { ob in
                var start = 0
                while start < ranges.count {
                    let end = min(ranges.count, start + blockRows)
                    let queries = (start..<end).map {
                        AttentionQuery(q: qb.baseAddress! + $0 * heads * hd, out: ob.baseAddress! + $0 * heads * hd,
                                       lo: ranges[$0].lo, visible: ranges[$0].visible)
                    }
                    queries.withUnsafeBufferPointer { qs in
                        var scores = [Float](repeating: .nan, count: max(1, Attention.tiledScratch(qs, heads: heads)))
                        Attention.rows(qs, heads: heads, kv: kv, offset: offset, headDim: hd, scale: scale, scores: &scores)
                    }
                    start = end
                }
            }
        }
        return out
    }

    /// The same rows one at a time through Attention.group.
    static func perRow(_ q: [Float], _ ranges: [(lo: Int, visible: Int)], heads: Int, hd: Int, kv: KVView,
                       offset: Int) -> [Float] {
        var out = [Float](repeating: .nan, count: ranges.count * heads * hd)
        let scale = 1 / Float(hd).squareRoot()
        for (r, range) in ranges.enumerated() {
            var scores = [Float](repeating: .nan, count: max(1, heads * (range.visible - range.lo)))
            var o = [Float](repeating: .nan, count: heads * hd)
            q.withUnsafeBufferPointer { qb in
                Attention.group(q: qb.baseAddress! + r * heads * hd, heads: heads, kv: kv, offset: offset, headDim: hd,
                                lo: range.lo, visible: range.visible, scale: scale, scores: &scores, out: &o)
            }
            out.replaceSubrange(r * heads * hd..<(r + 1) * heads * hd, with: o)
        }
        return out
    }

    /// max over rows/heads/lanes of |out − ref| / max|v| with ref = float64
    /// softmax(q·K/√hd)·V over positions lo..<visible; keys/values of position p at
    /// key(p)/value(p) (hd floats of the kv head).
    static func float64Error(_ out: [Float], _ q: [Float], _ ranges: [(lo: Int, visible: Int)], heads: Int, hd: Int,
                             key: (Int) -> UnsafePointer<Float>, value: (Int) -> UnsafePointer<Float>) -> Double {
        var worst = 0.0, vmax = 0.0
        let scale = 1 / Double(hd).squareRoot()
        for (r, range) in ranges.enumerated() {
            for h in 0..<heads {
                let qh = r * heads * hd + h * hd
                var s: [Double] = []
                for p in range.lo..<range.visible {
                    let k = key(p)
                    var dot = 0.0
                    for c in 0..<hd { dot += Double(q[qh + c]) * Double(k[c]) }
                    s.append(dot * scale)
                }
                let m = s.max()!, e = s.map { Foundation.exp($0 - m) }, sum = e.reduce(0, +)
                for c in 0..<hd {
                    var ref = 0.0
                    for p in range.lo..<range.visible {
                        let v = Double(value(p)[c])
                        ref += e[p - range.lo] / sum * v
                        vmax = max(vmax, abs(v))
                    }
                    worst = max(worst, abs(Double(out[qh + c]) - ref))
                }
            }
        }
        return worst / vmax
    }

    /// Random lengths (not multiples of the 64-position tile or the 8-key blocks), head
    /// dims 8…128 (20: not a multiple of 8), GQA groups 1…4, causal rows of a chunk at
    /// a random start, a sliding window and a set of scattered rows; keys/values cut into
    /// runs of 16, 7, 64 and one run; rows in blocks of 1, 5 and all. Every output is
    /// bit-identical to Attention.group on the row alone, and within 1e-5 · max|v| of
    /// float64.
    @Test func rowsEqualPerRowKernelAndFloat64() {
        var g = SystemRandomNumberGenerator()
        for (hd, kvHeads, heads) in [(64, 3, 3), (80, 1, 2), (8, 2, 1), (128, 2, 4), (20, 2, 3)] {
            let length = Int.random(in: 130...260, using: &g), kvd = hd * kvHeads
            let keys = Self.random(length * kvd), values = Self.random(length * kvd)
            let chunk = Int.random(in: 9...40, using: &g), first = length - chunk
            let causal = (first..<length).map { (lo: 0, visible: $0 + 1) }
            let windowed = (first..<length).map { (lo: max(0, $0 - 36), visible: $0 + 1) }
            let scattered = [3, 77, 0, length - 1, 64, 63, 128].filter { $0 < length }.map { (lo: max(0, $0 - 50), visible: $0 + 1) }
            keys.withUnsafeBufferPointer { kb in
                values.withUnsafeBufferPointer { vb in
                    func view(_ size: Int) -> KVView {
                        KVView(segments: stride(from: 0, to: length, by: size).map {
                            KVSegment(keys: kb.baseAddress! + $0 * kvd, values: vb.baseAddress! + $0 * kvd,
                                      start: $0, count: min(size, length - $0))
                        }, rowStride: kvd)
                    }
                    let off = (kvHeads - 1) * hd
                    for (name, ranges) in [("causal", causal), ("window", windowed), ("scattered", scattered)] {
                        let q = Self.random(ranges.count * heads * hd)
                        let reference = Self.perRow(q, ranges, heads: heads, hd: hd, kv: view(16), offset: off)
                        for size in [16, 7, 64, length] {
                            for blockRows in [1, 5, ranges.count] {
                                let out = Self.tiled(q, ranges, heads: heads, hd: hd, kv: view(size), offset: off,
                                                     blockRows: blockRows)
                                let differing = zip(out, reference).filter { $0.0.bitPattern != $0.1.bitPattern }.count
                                #expect(differing == 0,
                                        "hd \(hd) \(name) runs of \(size) blocks of \(blockRows): \(differing) values differ")
                            }
                        }
                        let error = Self.float64Error(reference, q, ranges, heads: heads, hd: hd,
                                                      key: { kb.baseAddress! + $0 * kvd + off },
                                                      value: { vb.baseAddress! + $0 * kvd + off })
                        #expect(error <= 1e-5, "hd \(hd) \(name): error \(error) of max|v|")
                    }
                }
            }
        }
    }

    /// Every KV storage type: random rows written into a paged cache (f32, f16, int8,
    /// KIVI 4-bit with an f32 residual), gathered as the decoded view attention reads;
    /// the tiled kernel over a 37-row chunk equals the per-row kernel bit for bit and
    /// float64 over the decoded values within 1e-5 · max|v|.
    @Test(arguments: [KVStorageType.f32, .f16, .int8, .kivi4])
    func rowsOverEveryStorageType(_ storage: KVStorageType) throws {
        try Self.storageCase(storage, length: 181, chunk: 37)
    }

    /// `length` random rows of 3 kv heads (hd 64) written into a paged cache of `storage`,
    /// gathered as the decoded view attention reads; the last `chunk` rows in blocks of 16
    /// (the serving forward's) equal the per-row kernel bit for bit and float64 over the
    /// decoded values within 1e-5 · max|v|, for each kv head.
    static func storageCase(_ storage: KVStorageType, length: Int, chunk: Int) throws {
        let hd = 64, kvHeads = 3, heads = 3, kvd = hd * kvHeads
        let cache = try PagedKVCache(kvDim: kvd, layout: .full(layerCount: 1, storage: storage, blockSize: 16, kiviResidual: 20),
                                     budgetBytes: 1 << 26)
        try cache.reserve([KVGrowth(sequence: 0, length: length)])
        let keys = random(length * kvd), values = random(length * kvd)
        for p in 0..<length {
            cache.write(layer: 0, sequence: 0, position: p, keys: keys.withUnsafeBufferPointer { $0.baseAddress! + p * kvd },
                        values: values.withUnsafeBufferPointer { $0.baseAddress! + p * kvd })
        }
        cache.commit(sequence: 0, length: length)
        let view = KVView(segments: try cache.segments(layer: 0, sequence: 0, length: length), rowStride: kvd)
        let ranges = (length - chunk..<length).map { (lo: 0, visible: $0 + 1) }
        func rowPointer(_ p: Int, keys: Bool) -> UnsafePointer<Float> {
            let seg = view.segments.first { p >= $0.start && p < $0.start + $0.count }!
            return (keys ? seg.keys : seg.values) + (p - seg.start) * kvd
        }
        for g in 0..<kvHeads {
            let q = random(ranges.count * heads * hd)
            let reference = perRow(q, ranges, heads: heads, hd: hd, kv: view, offset: g * hd)
            let out = tiled(q, ranges, heads: heads, hd: hd, kv: view, offset: g * hd, blockRows: 16)
            let differing = zip(out, reference).filter { $0.0.bitPattern != $0.1.bitPattern }.count
            #expect(differing == 0, "\(storage) kv head \(g): \(differing) values differ")
            let error = float64Error(out, q, ranges, heads: heads, hd: hd,
                                     key: { rowPointer($0, keys: true) + g * hd },
                                     value: { rowPointer($0, keys: false) + g * hd })
            #expect(error <= 1e-5, "\(storage) kv head \(g): error \(error)")
        }
    }

    // MARK: the serving forward

    /// A 100-token prompt through the serving forward of the tiny model, in each layout
    /// (f32, f16, int8, sliding windows, shared layers): in one batch (blocks of 16 rows
    /// through the tiled kernel), in chunks of 7, 30 and 63 (blocks cut elsewhere) and
    /// token by token (each row through the per-row kernel): every logit bit-identical;
    /// the one-batch run with 1 and 2 threads too. KIVI: 1 vs 2 threads (its chunks
    /// change what is quantized when, so chunkings legitimately differ).
    @Test func servingLogitsIgnoreBlockingChunkingAndThreads() throws {
        defer { try? Parallel.setThreadCount(0) }
        let model = try LayerForwardTests.tinyModel(), c = model.config, vocab = c.vocabSize
        let prompt = LayerForwardTests.randomDocuments([100], vocab: vocab, seed: 31)[0]
        let layouts: [(String, KVLayout)] = [
            ("f32", .full(layerCount: c.layerCount, storage: .f32, blockSize: 16)),
            ("f16", .full(layerCount: c.layerCount, storage: .f16, blockSize: 16)),
            ("int8", .full(layerCount: c.layerCount, storage: .int8, blockSize: 8)),
            ("sliding", KVLayout(layers: [.full, .sliding(window: 23), .sliding(window: 23)], storage: .f32, blockSize: 16)),
            ("shared", KVLayout(layers: [.full, .shared(source: 0), .sliding(window: 40)], storage: .f32, blockSize: 16)),
            ("kivi4", .full(layerCount: c.layerCount, storage: .kivi4, blockSize: 16, kiviResidual: 20)),
        ]
        func run(_ layout: KVLayout, chunks: [Int]) throws -> [Float] {
            let cache = try PagedKVCache(kvDim: c.kvDim, layout: layout, budgetBytes: 1 << 26, prefixCaching: false)
            var out: [Float] = []
            var start = 0, k = 0
            while start < prompt.count {
                let n = min(chunks[k % chunks.count], prompt.count - start)
                var batch = TokenBatch()
                for p in start..<start + n { batch.append(prompt[p], position: p, sequence: 3, logits: true) }
                var logits = [Float](repeating: .nan, count: n * vocab)
                try logits.withUnsafeMutableBufferPointer { try model.forward(batch, cache: cache, logits: $0.baseAddress) }
                out += logits
                start += n
                k += 1
            }
            return out
        }
        for (name, layout) in layouts {
            try Parallel.setThreadCount(2)
            let whole = try run(layout, chunks: [prompt.count])
            #expect(whole.allSatisfy { $0.isFinite }, "\(name): non-finite logits")
            var others: [(String, [Float])] = []
            if name != "kivi4" {
                others.append(("chunks 7/30/63", try run(layout, chunks: [7, 30, 63])))
                others.append(("token by token", try run(layout, chunks: [1])))
            }
            try Parallel.setThreadCount(1)
            others.append(("1 thread", try run(layout, chunks: [prompt.count])))
            for (what, logits) in others {
                let differing = LayerForwardTests.differing(whole, logits)
                #expect(differing == 0, "\(name), \(what): \(differing) logits differ from the one-batch run")
            }
        }
    }
}
