import BCKernels
import Foundation
import Testing

/// The transformer's two matrix kernels against float64 references on fresh random
/// inputs, and their batch-invariance property (bit-identical results for a row alone
/// or among others), which the engine's batch invariance rests on.
@Suite struct ProjectionAttentionKernelTests {
    static func random(_ n: Int) -> [Float] {
        var g = SystemRandomNumberGenerator()
        return (0..<n).map { _ in Float.random(in: -1...1, using: &g) }
    }

    /// PackedGEMM vs float64 for shapes off the 6 × 16 tile (rows not a multiple of 16,
    /// token counts around 6 and the 96-token block): |y − ref| ≤ K·2⁻²⁴·Σ|x_k·w_k| (the
    /// float32 summation bound). Each token's row alone is bit-identical to the batched row.
    @Test func packedGEMMMatchesFloat64AndIsBatchInvariant() throws {
        for (rows, cols) in [(1, 1), (17, 7), (45, 64), (101, 577), (32, 1536)] {
            let w = Self.random(rows * cols)
            let packed = try w.withUnsafeBufferPointer { try PackedWeights($0.baseAddress!, rows: rows, cols: cols) }
            for r in [0, rows / 2, rows - 1] {
                var row = [Float](repeating: .nan, count: cols)
                packed.copyRow(r, into: &row)
                #expect(row == Array(w[r * cols..<(r + 1) * cols]), "copyRow \(r) of \(rows)x\(cols)")
            }
            for tokens in [1, 2, 5, 6, 7, 13, 97, 200] {
                let x = Self.random(tokens * cols)
                var y = [Float](repeating: .nan, count: tokens * rows)
                PackedGEMM.multiply(x, ldx: cols, tokens: tokens, packed, &y, ldy: rows)
                var worst = 0.0
                for t in 0..<tokens {
                    for o in 0..<rows {
                        var ref = 0.0, mag = 0.0
                        for k in 0..<cols {
                            let p = Double(x[t * cols + k]) * Double(w[o * cols + k])
                            ref += p
                            mag += abs(p)
                        }
                        let bound = Double(cols) * 0x1p-24 * mag + 1e-30
                        worst = max(worst, abs(Double(y[t * rows + o]) - ref) / bound)
                    }
                }
                #expect(worst <= 1, "\(tokens) x \(rows)x\(cols): error \(worst) of the bound")
                var same = true
                for t in [0, tokens / 2, tokens - 1] {
                    var alone = [Float](repeating: .nan, count: rows)
                    Array(x[t * cols..<(t + 1) * cols]).withUnsafeBufferPointer {
                        PackedGEMM.multiply($0.baseAddress!, ldx: cols, tokens: 1, packed, &alone, ldy: rows)
                    }
                    same = same && alone.withUnsafeBytes { a in
                        y.withUnsafeBytes { memcmp(a.baseAddress!, $0.baseAddress! + t * rows * 4, rows * 4) == 0 }
                    }
                }
                #expect(same, "\(tokens) x \(rows)x\(cols): a row alone differs from the batched row")
            }
        }
    }

    /// Attention.group (the query heads sharing one kv head) vs float64
    /// softmax(q·K/√d)·V per head over keys/values split into segments, with windows
    /// (lo > 0) and position counts that are not multiples of the 8-key blocks:
    /// |out − ref| ≤ 1e-5·max|v|. Splitting the same rows into other segments (paged
    /// blocks vs one contiguous run) gives bit-identical output, and so does computing a
    /// head alone instead of with its group, or with or without the up-front prefetch.
    @Test func attentionGroupMatchesFloat64AndIgnoresSegmentation() {
        for (hd, kvHeads, heads) in [(64, 3, 3), (80, 1, 2), (8, 2, 1), (128, 2, 4), (20, 2, 3)] {
            let kvd = hd * kvHeads, length = 150
            let keys = Self.random(length * kvd), values = Self.random(length * kvd)
            let q = Self.random(heads * hd)
            let scale = 1 / Float(hd).squareRoot()
            keys.withUnsafeBufferPointer { kb in
                values.withUnsafeBufferPointer { vb in
                    func segments(_ size: Int) -> KVView {
                        KVView(segments: stride(from: 0, to: length, by: size).map {
                            KVSegment(keys: kb.baseAddress! + $0 * kvd, values: vb.baseAddress! + $0 * kvd,
                                      start: $0, count: min(size, length - $0))
                        }, rowStride: kvd)
                    }
                    for (lo, visible) in [(0, 1), (0, 150), (37, 120), (149, 150), (0, 17), (3, 12)] {
                        let off = (kvHeads - 1) * hd
                        var outs: [[Float]] = []
                        for size in [16, 7, 13, length] {
                            for prefetch in [true, false] {
                                var scores = [Float](repeating: .nan, count: heads * (visible - lo))
                                var out = [Float](repeating: .nan, count: heads * hd)
                                Attention.group(q: q, heads: heads, kv: segments(size), offset: off,
                                                headDim: hd, lo: lo, visible: visible, scale: scale, scores: &scores, out: &out,
                                                prefetchRows: prefetch)
                                outs.append(out)
                            }
                        }
                        #expect(outs.allSatisfy { $0 == outs[0] }, "hd \(hd) [\(lo), \(visible)): segmentation changed the result")
                        for h in 0..<heads {
                            var scores = [Float](repeating: .nan, count: visible - lo)
                            var alone = [Float](repeating: .nan, count: hd)
                            q.withUnsafeBufferPointer { qb in
                                Attention.group(q: qb.baseAddress! + h * hd, heads: 1, kv: segments(16),
                                                offset: off, headDim: hd, lo: lo, visible: visible, scale: scale,
                                                scores: &scores, out: &alone)
                            }
                            #expect(Array(outs[0][h * hd..<(h + 1) * hd]) == alone, "hd \(hd) head \(h): alone differs from group")
                            var s = [Double](), vmax = 0.0
                            for p in lo..<visible {
                                var dot = 0.0
                                for c in 0..<hd { dot += Double(q[h * hd + c]) * Double(keys[p * kvd + off + c]) }
                                s.append(dot * Double(scale))
                            }
                            let m = s.max()!
                            let e = s.map { Foundation.exp($0 - m) }, sum = e.reduce(0, +)
                            var worst = 0.0
                            for c in 0..<hd {
                                var ref = 0.0
                                for p in lo..<visible {
                                    let v = Double(values[p * kvd + off + c])
                                    ref += e[p - lo] / sum * v
                                    vmax = max(vmax, abs(v))
                                }
                                worst = max(worst, abs(Double(outs[0][h * hd + c]) - ref))
                            }
                            #expect(worst <= 1e-5 * vmax, "hd \(hd) head \(h) [\(lo), \(visible)): error \(worst)")
                        }
                    }
                }
            }
        }
    }
}
