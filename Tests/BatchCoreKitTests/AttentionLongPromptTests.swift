import BCCore
import BCKV
import BCKernels
import Foundation
import Testing

/// `Attention.rows` on LONG prompts — more positions than a value tile
/// (`Attention.valueTile`), so the P·V of several rows (`weightedValuesRows`) parks its
/// slot sums between tiles, groups streams six at a time and splits each group's tile
/// into a common range and per-stream ends — against `Attention.group` on each row alone
/// (bit for bit) and float64, and the same bits whatever the thread count.
@Suite struct AttentionLongPromptTests {
    /// Keys/values of `length` positions, `kvHeads` kv heads of hd, in runs of `run` rows.
    struct Cache {
        let keys: [Float], values: [Float], kvd: Int, length: Int

        init(length: Int, kvd: Int) {
            self.length = length
            self.kvd = kvd
            keys = AttentionTiledTests.random(length * kvd)
            values = AttentionTiledTests.random(length * kvd)
        }

        func withView<R>(run: Int, _ body: (KVView, _ key: (Int) -> UnsafePointer<Float>,
                                            _ value: (Int) -> UnsafePointer<Float>) -> R) -> R {
            keys.withUnsafeBufferPointer { kb in
                values.withUnsafeBufferPointer { vb in
                    let k = kb.baseAddress!, v = vb.baseAddress!, kvd = kvd, length = length
                    let view = KVView(segments: stride(from: 0, to: length, by: run).map {
                        KVSegment(keys: k + $0 * kvd, values: v + $0 * kvd, start: $0, count: min(run, length - $0))
                    }, rowStride: kvd)
                    return body(view, { k + $0 * kvd }, { v + $0 * kvd })
                }
            }
        }
    }

    /// Prompt lengths past two value tiles (odd, not multiples of 64), head dims 64, 80
    /// and 128, GQA groups 1…4 (stream counts that are and are not multiples of six),
    /// causal rows of a 23-row chunk, a window of 700 (ranges starting in different
    /// tiles), rows whose ranges straddle a tile cut, and a set of scattered rows; in
    /// blocks of 7 and of all rows; runs of 16 and 61. Every output equals
    /// Attention.group on the row alone bit for bit, and float64 within 1e-5 · max|v|.
    @Test func longRowsEqualPerRowKernelAndFloat64() {
        var g = SystemRandomNumberGenerator()
        let tile = Attention.valueTile
        for (hd, kvHeads, heads) in [(64, 3, 3), (80, 1, 2), (128, 2, 4), (64, 2, 1)] {
            let length = 2 * tile + Int.random(in: 40...300, using: &g) | 1, kvd = hd * kvHeads
            let cache = Cache(length: length, kvd: kvd)
            let first = length - 23
            let causal = (first..<length).map { (lo: 0, visible: $0 + 1) }
            let windowed = (first..<length).map { (lo: max(0, $0 - 699), visible: $0 + 1) }
            let straddling = (tile - 9..<tile + 8).map { (lo: max(0, $0 - Int.random(in: 0...200, using: &g)), visible: $0 + 1) }
            let scattered = [5, 1500, tile - 1, tile, 2 * tile + 1, length - 1, 64, 700].map {
                (lo: max(0, $0 - 1100), visible: $0 + 1)
            }
            let off = (kvHeads - 1) * hd
            for (name, ranges) in [("causal", causal), ("window", windowed), ("straddling", straddling),
                                   ("scattered", scattered)] {
                let q = AttentionTiledTests.random(ranges.count * heads * hd)
                cache.withView(run: 16) { view, key, value in
                    let reference = AttentionTiledTests.perRow(q, ranges, heads: heads, hd: hd, kv: view, offset: off)
                    for run in [16, 61] {
                        cache.withView(run: run) { view, _, _ in
                            for blockRows in [7, ranges.count] {
                                let out = AttentionTiledTests.tiled(q, ranges, heads: heads, hd: hd, kv: view, offset: off,
                                                                    blockRows: blockRows)
                                let differing = zip(out, reference).filter { $0.0.bitPattern != $0.1.bitPattern }.count
                                #expect(differing == 0, "hd \(hd) heads \(heads) \(name) runs of \(run) blocks of \(blockRows): \(differing) values differ")
                            }
                        }
                    }
                    let error = AttentionTiledTests.float64Error(reference, q, ranges, heads: heads, hd: hd,
                                                                 key: { key($0) + off }, value: { value($0) + off })
                    #expect(error <= 1e-5, "hd \(hd) \(name): error \(error) of max|v|")
                }
            }
        }
    }

    /// A 60-row chunk at the end of a 2,500-position prompt, 3 kv heads of 3 query heads
    /// (SmolLM2-135M's shape), blocks of 16 rows × kv heads spread over Parallel.forEach
    /// (as the serving forward does) with 1 and 2 threads: the same bits.
    @Test func longRowsIgnoreThreadCount() throws {
        defer { try? Parallel.setThreadCount(0) }
        let hd = 64, kvHeads = 3, heads = 3, kvd = hd * kvHeads, length = 2501, chunk = 60
        let cache = Cache(length: length, kvd: kvd)
        let q = AttentionTiledTests.random(chunk * kvHeads * heads * hd)
        func run(threads: Int) throws -> [Float] {
            try Parallel.setThreadCount(threads)
            var out = [Float](repeating: .nan, count: chunk * kvHeads * heads * hd)
            cache.withView(run: 16) { view, _, _ in
                q.withUnsafeBufferPointer { qb in
                    out.withUnsafeMutableBufferPointer { ob in
                        let qp = qb.baseAddress!, op = ob.baseAddress!
                        let blocks = stride(from: 0, to: chunk, by: 16).map { $0..<min(chunk, $0 + 16) }
                        Parallel.forEach(blocks.count * kvHeads) { item in
                            let block = blocks[item / kvHeads], kvHead = item % kvHeads
                            let queries = block.map { r in
                                let o = (r * kvHeads + kvHead) * heads * hd
                                return AttentionQuery(q: qp + o, out: op + o, lo: 0, visible: length - chunk + r + 1)
                            }
                            queries.withUnsafeBufferPointer { qs in
                                var scores = [Float](repeating: .nan, count: Attention.tiledScratch(qs, heads: heads))
                                Attention.rows(qs, heads: heads, kv: view, offset: kvHead * hd, headDim: hd,
                                               scale: 1 / Float(hd).squareRoot(), scores: &scores)
                            }
                        }
                    }
                }
            }
            return out
        }
        let one = try run(threads: 1), two = try run(threads: 2)
        #expect(one.allSatisfy { $0.isFinite })
        let differing = zip(one, two).filter { $0.0.bitPattern != $0.1.bitPattern }.count
        #expect(differing == 0, "\(differing) values differ between 1 and 2 threads")
    }

    /// Every KV storage type on a long prompt: random rows written into a paged cache (f32,
    /// f16, int8, KIVI 4-bit with an f32 residual) past two value tiles, gathered as the
    /// decoded view attention reads; a 23-row chunk at the end in blocks of 16 (the
    /// serving forward's) equals the per-row kernel bit for bit and float64 over the
    /// decoded values within 1e-5 · max|v|, for each of the 3 kv heads.
    @Test(arguments: [KVStorageType.f32, .f16, .int8, .kivi4])
    func longRowsOverEveryStorageType(_ storage: KVStorageType) throws {
        try AttentionTiledTests.storageCase(storage, length: 2 * Attention.valueTile + 77, chunk: 23)
    }
}
