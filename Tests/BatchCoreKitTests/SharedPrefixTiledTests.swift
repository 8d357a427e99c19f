import BCCore
import BCKernels
import Foundation
import Testing

/// `Attention.prefixTiled` (the shared-prefix kernel: matrix-matrix products over K/V
/// tiles with an online softmax) against float64 softmax attention, with position splits
/// merged by `Attention.mergePartial`, and the bits of a row alone vs among others.
@Suite struct SharedPrefixTiledTests {
    /// prefixTiled over `ranges` (row r reads ranges[r]) restricted to from..<to:
    /// (out [R × heads·hd], stats [R × 2·heads]).
    static func tiled(_ q: [Float], _ ranges: [(lo: Int, visible: Int)], heads: Int, hd: Int, kv: KVView, offset: Int,
                      from: Int, to: Int) -> (out: [Float], stats: [Float]) {
        let rows = ranges.count, w = heads * hd
        var out = [Float](repeating: .nan, count: rows * w)
        var stats = [Float](repeating: .nan, count: rows * 2 * heads)
        var scratch = [Float](repeating: .nan, count: Attention.prefixScratch(vectors: rows * heads, headDim: hd))
        q.withUnsafeBufferPointer { qb in
            out.withUnsafeMutableBufferPointer { ob in
                stats.withUnsafeMutableBufferPointer { sb in
                    let queries = (0..<rows).map {
                        AttentionQuery(q: qb.baseAddress! + $0 * w, out: ob.baseAddress! + $0 * w, lo: ranges[$0].lo,
                                       visible: ranges[$0].visible, stats: sb.baseAddress! + $0 * 2 * heads)
                    }
                    queries.withUnsafeBufferPointer { qs in
                        Attention.prefixTiled(qs, heads: heads, kv: kv, offset: offset, headDim: hd, from: from, to: to,
                                              scale: 1 / Float(hd).squareRoot(), scratch: &scratch)
                    }
                }
            }
        }
        return (out, stats)
    }

    /// Merges a partial result (`tiled`'s output and statistics) into `out`/`stats`, row by
    /// row, with `Attention.mergePartial`.
    static func merge(_ part: (out: [Float], stats: [Float]), into out: inout [Float], stats: inout [Float],
                      rows: Int, heads: Int, hd: Int) {
        let w = heads * hd
        out.withUnsafeMutableBufferPointer { ob in
            stats.withUnsafeMutableBufferPointer { ab in
                part.out.withUnsafeBufferPointer { pb in
                    part.stats.withUnsafeBufferPointer { sb in
                        for r in 0..<rows {
                            Attention.mergePartial(into: ob.baseAddress! + r * w, stats: ab.baseAddress! + r * 2 * heads,
                                                   part: pb.baseAddress! + r * w, stats: sb.baseAddress! + r * 2 * heads,
                                                   heads: heads, headDim: hd)
                        }
                    }
                }
            }
        }
    }

    /// A view over random keys/values of `length` positions cut into runs of the given
    /// lengths (cycled), rows `stride` floats apart; the buffers are returned to keep alive.
    static func view(length: Int, stride: Int, runs: [Int], keys: UnsafePointer<Float>, values: UnsafePointer<Float>)
        -> KVView {
        var segments: [KVSegment] = [], p = 0, i = 0
        while p < length {
            let n = min(runs[i % runs.count], length - p)
            segments.append(KVSegment(keys: keys + p * stride, values: values + p * stride, start: p, count: n))
            p += n
            i += 1
        }
        return KVView(segments: segments, rowStride: stride)
    }

    /// Random queries over random keys/values (rows strided like a cache: stride = kv
    /// heads · hd, the kv head at its offset), head dims 64, 20, 13, 128, GQA groups 1–4,
    /// 1…14 rows (register blocks of 6 with remainders), runs of 16, of 7/30/64 and one
    /// run (tile cuts at segment ends and at multiples of 64), row ranges full, windowed
    /// (lo inside), causal (visible inside), one-position, and empty; the positions cut
    /// at 2–3 random split points (mid-tile), each split one prefixTiled call, the parts
    /// merged in order by mergePartial. Output within 1e-5 · max|v| of float64 softmax ·
    /// V, the merged log-sum-exp within 1e-5 of float64's, the max within 1e-5 of the
    /// true max; an empty row gets zeros and −∞ statistics.
    @Test func splitsMergedEqualFloat64() {
        var g = SystemRandomNumberGenerator()
        for (hd, kvHeads, heads) in [(64, 3, 3), (20, 2, 1), (13, 1, 4), (128, 2, 2), (64, 1, 3)] {
            for runs in [[16], [7, 30, 64], [100_000]] {
                let stride = hd * kvHeads, length = Int.random(in: 70...300, using: &g)
                let rows = Int.random(in: 1...14, using: &g)
                let k = AttentionTiledTests.random(length * stride), v = AttentionTiledTests.random(length * stride)
                let q = AttentionTiledTests.random(rows * heads * hd)
                let ranges: [(lo: Int, visible: Int)] = (0..<rows).map { r in
                    switch r % 5 {
                    case 0: (0, length)
                    case 1: (Int.random(in: 1..<length, using: &g), length)
                    case 2: (0, Int.random(in: 1..<length, using: &g))
                    case 3: { let p = Int.random(in: 0..<length, using: &g); return (p, p + 1) }()
                    default: r == 4 ? (length, length) : (3, length - 5)
                    }
                }
                var cuts = [0, length]
                for _ in 0..<Int.random(in: 1...2, using: &g) { cuts.append(Int.random(in: 1..<length, using: &g)) }
                cuts.sort()
                k.withUnsafeBufferPointer { kb in
                    v.withUnsafeBufferPointer { vb in
                        let kv = Self.view(length: length, stride: stride, runs: runs, keys: kb.baseAddress!, values: vb.baseAddress!)
                        for kvHead in 0..<kvHeads {
                            let off = kvHead * hd, w = heads * hd
                            var out = [Float](repeating: 0, count: rows * w)
                            var acc = [Float](repeating: -.infinity, count: rows * 2 * heads)
                            for (a, b) in zip(cuts, cuts.dropFirst()) {
                                let part = Self.tiled(q, ranges, heads: heads, hd: hd, kv: kv, offset: off, from: a, to: b)
                                Self.merge(part, into: &out, stats: &acc, rows: rows, heads: heads, hd: hd)
                            }
                            var worst = 0.0, vmax = 0.0, lseErr = 0.0, maxErr = 0.0, emptyBad = 0
                            let scale = 1 / Double(hd).squareRoot()
                            for r in 0..<rows {
                                let (lo, visible) = ranges[r]
                                for h in 0..<heads {
                                    let qh = r * w + h * hd
                                    if lo >= visible {
                                        if acc[r * 2 * heads + 2 * h + 1] != -.infinity || (0..<hd).contains(where: { out[qh + $0] != 0 }) {
                                            emptyBad += 1
                                        }
                                        continue
                                    }
                                    let s = (lo..<visible).map { p -> Double in
                                        var dot = 0.0
                                        for c in 0..<hd { dot += Double(q[qh + c]) * Double(k[p * stride + off + c]) }
                                        return dot * scale
                                    }
                                    let mx = s.max()!, e = s.map { Foundation.exp($0 - mx) }, sum = e.reduce(0, +)
                                    lseErr = max(lseErr, abs(Double(acc[r * 2 * heads + 2 * h + 1]) - (mx + Foundation.log(sum))))
                                    maxErr = max(maxErr, abs(Double(acc[r * 2 * heads + 2 * h]) - mx))
                                    for c in 0..<hd {
                                        var ref = 0.0
                                        for (i, p) in (lo..<visible).enumerated() {
                                            let x = Double(v[p * stride + off + c])
                                            ref += e[i] / sum * x
                                            vmax = max(vmax, abs(x))
                                        }
                                        worst = max(worst, abs(Double(out[qh + c]) - ref))
                                    }
                                }
                            }
                            let label = "hd \(hd) group \(heads) runs \(runs) rows \(rows) cuts \(cuts) kv head \(kvHead)"
                            #expect(worst / vmax <= 1e-5, "\(label): error \(worst / vmax) of max|v|")
                            #expect(lseErr <= 1e-5, "\(label): log-sum-exp error \(lseErr)")
                            #expect(maxErr <= 1e-5, "\(label): max error \(maxErr)")
                            #expect(emptyBad == 0, "\(label): \(emptyBad) empty heads not zero / −∞")
                        }
                    }
                }
            }
        }
    }

    /// A row's output and statistics from prefixTiled among 1, 5, 6, 7 or 40 other rows
    /// (other register blocks, other remainders, other ranges around it) are bit-identical
    /// to the row alone: a row's bits depend on its query, range and the tiles only.
    @Test func rowAloneEqualsRowAmongOthers() {
        let hd = 64, heads = 3, stride = 2 * hd, length = 333, w = heads * hd
        let k = AttentionTiledTests.random(length * stride), v = AttentionTiledTests.random(length * stride)
        k.withUnsafeBufferPointer { kb in
            v.withUnsafeBufferPointer { vb in
                let kv = Self.view(length: length, stride: stride, runs: [16], keys: kb.baseAddress!, values: vb.baseAddress!)
                for others in [1, 5, 6, 7, 40] {
                    let rows = others + 1
                    let q = AttentionTiledTests.random(rows * w)
                    let ranges = (0..<rows).map { r in (lo: (r * 37) % 90, visible: length - (r * 11) % 50) }
                    let together = Self.tiled(q, ranges, heads: heads, hd: hd, kv: kv, offset: hd, from: 20, to: 301)
                    var bad = 0
                    for r in [0, rows / 2, rows - 1] {
                        let alone = Self.tiled(Array(q[r * w..<(r + 1) * w]), [ranges[r]], heads: heads, hd: hd, kv: kv,
                                               offset: hd, from: 20, to: 301)
                        bad += LayerForwardTests.differing(alone.out, Array(together.out[r * w..<(r + 1) * w]))
                        bad += LayerForwardTests.differing(alone.stats, Array(together.stats[r * 2 * heads..<(r + 1) * 2 * heads]))
                    }
                    #expect(bad == 0, "\(others) other rows: \(bad) values differ from the row alone")
                }
            }
        }
    }
}
