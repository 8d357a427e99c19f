import BCCore
import BCKernels
import Foundation
import Testing

/// The training kernels of the projection and of causal grouped-query attention
/// (ProjectionBackward, AttentionTraining) against float64 references on fresh random
/// inputs: matrix products, softmax attention, central finite differences of a float64
/// attention loss, and a float64 analytic attention backward; and their determinism
/// across thread counts.
@Suite(.serialized) struct ProjectionAttentionBackwardTests {
    static func random(_ n: Int) -> [Float] {
        var g = SystemRandomNumberGenerator()
        // Nonzero values in ±[0.05, 1].
        return (0..<n).map { _ in Float.random(in: 0.05...1, using: &g) * (Bool.random(using: &g) ? 1 : -1) }
    }

    // MARK: Projection

    /// dX = dY·W (overwrite and accumulate) vs float64 with padded row strides:
    /// |dX − ref| ≤ (K+1)·2⁻²⁴·(|dX₀| + Σ_o |dY·W|) per value (the float32 summation bound,
    /// K = rows); the padding past each row is never written.
    @Test func inputGradientMatchesFloat64() throws {
        let pad: Float = 12345
        for (rows, cols) in [(20, 37), (37, 64), (64, 96), (96, 20), (300, 17)] {
            for tokens in [1, 7, 33] {
                for accumulate in [false, true] {
                    let ldDY = rows + 3, ldDX = cols + 5
                    let w = Self.random(rows * cols), dY = Self.random(tokens * ldDY)
                    var dX = Self.random(tokens * ldDX)
                    for t in 0..<tokens { for k in cols..<ldDX { dX[t * ldDX + k] = pad } }
                    let dX0 = dX
                    ProjectionBackward.inputGradient(dY, ldDY: ldDY, tokens: tokens, weight: w, rows: rows, cols: cols,
                                                     &dX, ldDX: ldDX, accumulate: accumulate)
                    var worst = 0.0, padOK = true
                    for t in 0..<tokens {
                        for k in 0..<cols {
                            var ref = accumulate ? Double(dX0[t * ldDX + k]) : 0
                            var mag = abs(ref)
                            for o in 0..<rows {
                                let p = Double(dY[t * ldDY + o]) * Double(w[o * cols + k])
                                ref += p
                                mag += abs(p)
                            }
                            let bound = Double(rows + 1) * 0x1p-24 * mag
                            worst = max(worst, abs(Double(dX[t * ldDX + k]) - ref) / bound)
                        }
                        for k in cols..<ldDX where dX[t * ldDX + k] != pad { padOK = false }
                    }
                    #expect(worst <= 1, "dX \(tokens)x\(rows)x\(cols) accumulate \(accumulate): \(worst) of the bound")
                    #expect(padOK, "dX \(tokens)x\(rows)x\(cols): padding written")
                }
            }
        }
    }

    /// dW += dYᵀ·X vs float64 from a random starting dW: |dW − ref| ≤ (T+1)·2⁻²⁴·(|dW₀| +
    /// Σ_t |dY·X|) per value, including T beyond one reduction block (300 > 256).
    @Test func weightGradientMatchesFloat64() throws {
        for (rows, cols) in [(20, 37), (37, 64), (64, 96), (96, 20)] {
            for tokens in [1, 7, 33, 300] {
                let ldDY = rows + 2, ldX = cols + 1
                let dY = Self.random(tokens * ldDY), x = Self.random(tokens * ldX)
                var dW = Self.random(rows * cols)
                let dW0 = dW
                ProjectionBackward.weightGradient(dY, ldDY: ldDY, x, ldX: ldX, tokens: tokens, rows: rows, cols: cols, &dW)
                var worst = 0.0
                for o in 0..<rows {
                    for k in 0..<cols {
                        var ref = Double(dW0[o * cols + k])
                        var mag = abs(ref)
                        for t in 0..<tokens {
                            let p = Double(dY[t * ldDY + o]) * Double(x[t * ldX + k])
                            ref += p
                            mag += abs(p)
                        }
                        let bound = Double(tokens + 1) * 0x1p-24 * mag
                        worst = max(worst, abs(Double(dW[o * cols + k]) - ref) / bound)
                    }
                }
                #expect(worst <= 1, "dW \(tokens)x\(rows)x\(cols): \(worst) of the bound")
            }
        }
    }

    /// dX and dW are the same bits with 1 and 2 threads (several work items of each, and
    /// more reduction steps than one block).
    @Test func projectionGradientsAreThreadCountInvariant() throws {
        defer { try? Parallel.setThreadCount(0) }
        let tokens = 263, rows = 301, cols = 150
        let w = Self.random(rows * cols), dY = Self.random(tokens * rows), x = Self.random(tokens * cols)
        let dW0 = Self.random(rows * cols)
        var results: [[Float]] = []
        for threads in [1, 2] {
            try Parallel.setThreadCount(threads)
            var dX = [Float](repeating: .nan, count: tokens * cols)
            ProjectionBackward.inputGradient(dY, ldDY: rows, tokens: tokens, weight: w, rows: rows, cols: cols,
                                             &dX, ldDX: cols)
            var dW = dW0
            ProjectionBackward.weightGradient(dY, ldDY: rows, x, ldX: cols, tokens: tokens, rows: rows, cols: cols, &dW)
            results.append(dX + dW)
        }
        #expect(results[0].withUnsafeBytes { a in results[1].withUnsafeBytes { a.elementsEqual($0) } })
    }

    // MARK: Attention references (float64)

    struct Shape {
        let heads: Int, kvHeads: Int, hd: Int, documents: [Int]
        var d: Int { heads * hd }
        var kvd: Int { kvHeads * hd }
        var stride: Int { d + 2 * kvd }
        var rows: Int { documents.reduce(0, +) }
        var group: Int { heads / kvHeads }
        /// (first row, position) of each row.
        var rowStarts: [(first: Int, position: Int)] {
            var r: [(Int, Int)] = []
            var first = 0
            for n in documents {
                for p in 0..<n { r.append((first, p)) }
                first += n
            }
            return r
        }
    }

    /// Float64 attention: out [T × d] and per (row, head) (max, logSumExp) of the scaled scores.
    static func referenceForward(_ qkv: [Double], _ s: Shape) -> (out: [Double], stats: [Double]) {
        let scale = 1 / Double(s.hd).squareRoot()
        var out = [Double](repeating: 0, count: s.rows * s.d), stats = [Double](repeating: 0, count: s.rows * s.heads * 2)
        for (i, (first, pos)) in s.rowStarts.enumerated() {
            for h in 0..<s.heads {
                let g = h / s.group
                var sc = [Double](repeating: 0, count: pos + 1)
                for j in 0...pos {
                    var dot = 0.0
                    for c in 0..<s.hd { dot += qkv[i * s.stride + h * s.hd + c] * qkv[(first + j) * s.stride + s.d + g * s.hd + c] }
                    sc[j] = dot * scale
                }
                let m = sc.max()!
                let sum = sc.reduce(0) { $0 + exp($1 - m) }
                stats[(i * s.heads + h) * 2] = m
                stats[(i * s.heads + h) * 2 + 1] = m + log(sum)
                for j in 0...pos {
                    let p = exp(sc[j] - m) / sum
                    for c in 0..<s.hd { out[i * s.d + h * s.hd + c] += p * qkv[(first + j) * s.stride + s.d + s.kvd + g * s.hd + c] }
                }
            }
        }
        return (out, stats)
    }

    /// Float64 analytic backward of out = attention(qkv): dqkv [T × stride].
    static func referenceBackward(_ qkv: [Double], _ dOut: [Double], _ s: Shape) -> [Double] {
        let scale = 1 / Double(s.hd).squareRoot()
        var dqkv = [Double](repeating: 0, count: s.rows * s.stride)
        for (i, (first, pos)) in s.rowStarts.enumerated() {
            for h in 0..<s.heads {
                let g = h / s.group, q = i * s.stride + h * s.hd
                let k = { (j: Int) in (first + j) * s.stride + s.d + g * s.hd }
                let v = { (j: Int) in (first + j) * s.stride + s.d + s.kvd + g * s.hd }
                let dO = i * s.d + h * s.hd
                var sc = [Double](repeating: 0, count: pos + 1)
                for j in 0...pos {
                    for c in 0..<s.hd { sc[j] += qkv[q + c] * qkv[k(j) + c] }
                    sc[j] *= scale
                }
                let m = sc.max()!
                let sum = sc.reduce(0) { $0 + exp($1 - m) }
                let p = sc.map { exp($0 - m) / sum }
                var dp = [Double](repeating: 0, count: pos + 1)
                for j in 0...pos { for c in 0..<s.hd { dp[j] += dOut[dO + c] * qkv[v(j) + c] } }
                var dsum = 0.0
                for j in 0...pos { dsum += p[j] * dp[j] }
                for j in 0...pos {
                    let ds = p[j] * (dp[j] - dsum) * scale
                    for c in 0..<s.hd {
                        dqkv[q + c] += ds * qkv[k(j) + c]
                        dqkv[k(j) + c] += ds * qkv[q + c]
                        dqkv[v(j) + c] += p[j] * dOut[dO + c]
                    }
                }
            }
        }
        return dqkv
    }

    static func run(_ qkv: [Float], _ dOut: [Float], _ s: Shape) throws -> (out: [Float], stats: [Float], dqkv: [Float]) {
        var out = [Float](repeating: .nan, count: s.rows * s.d), stats = [Float](repeating: .nan, count: s.rows * s.heads * 2)
        try AttentionTraining.forward(qkv: qkv, rows: s.rows, documents: s.documents, heads: s.heads, kvHeads: s.kvHeads,
                                      headDim: s.hd, out: &out, stats: &stats)
        var dqkv = [Float](repeating: .nan, count: s.rows * s.stride)
        try AttentionTraining.backward(qkv: qkv, rows: s.rows, documents: s.documents, heads: s.heads, kvHeads: s.kvHeads,
                                       headDim: s.hd, stats: stats, dOut: dOut, dqkv: &dqkv)
        return (out, stats, dqkv)
    }

    /// max |a − b| / max |b| over the columns `cols` of every row of a [rows × stride] buffer.
    static func relativeError(_ a: [Float], _ b: [Double], stride: Int, cols: Range<Int>) -> Double {
        var diff = 0.0, mag = 0.0
        for r in 0..<(b.count / stride) {
            for c in cols {
                diff = max(diff, abs(Double(a[r * stride + c]) - b[r * stride + c]))
                mag = max(mag, abs(b[r * stride + c]))
            }
        }
        return diff / mag
    }

    // MARK: Attention tests

    /// Forward vs float64 softmax attention (out and statistics, 2e-6 relative to the
    /// largest value), and each row/kv-head bit-identical to the serving kernel
    /// Attention.group over the same document view.
    @Test func attentionForwardMatchesFloat64AndServingKernel() throws {
        let shapes = [Shape(heads: 2, kvHeads: 2, hd: 8, documents: [5, 9]),
                      Shape(heads: 3, kvHeads: 1, hd: 12, documents: [9, 5]),
                      Shape(heads: 9, kvHeads: 3, hd: 64, documents: [37, 1, 70])]
        for s in shapes {
            let qkv = Self.random(s.rows * s.stride), dOut = Self.random(s.rows * s.d)
            let (out, stats, _) = try Self.run(qkv, dOut, s)
            let ref = Self.referenceForward(qkv.map(Double.init), s)
            let eOut = Self.relativeError(out, ref.out, stride: s.d, cols: 0..<s.d)
            let eStats = Self.relativeError(stats, ref.stats, stride: 2, cols: 0..<2)
            #expect(eOut <= 2e-6, "out \(s): \(eOut)")
            #expect(eStats <= 2e-6, "stats \(s): \(eStats)")
            // The serving kernel on the same rows.
            var same = true
            for (i, (first, pos)) in s.rowStarts.enumerated() {
                qkv.withUnsafeBufferPointer { b in
                    let base = b.baseAddress!, keys = base + first * s.stride + s.d
                    let view = KVView(segments: [KVSegment(keys: keys, values: keys + s.kvd, start: 0, count: pos + 1)],
                                      rowStride: s.stride)
                    for g in 0..<s.kvHeads {
                        var scratch = [Float](repeating: 0, count: s.group * (pos + 1))
                        var o = [Float](repeating: .nan, count: s.group * s.hd)
                        Attention.group(q: base + i * s.stride + g * s.group * s.hd, heads: s.group, kv: view,
                                        offset: g * s.hd, headDim: s.hd, lo: 0, visible: pos + 1,
                                        scale: 1 / Float(s.hd).squareRoot(), scores: &scratch, out: &o)
                        let mine = Array(out[(i * s.d + g * s.group * s.hd)..<(i * s.d + (g + 1) * s.group * s.hd)])
                        if o.map(\.bitPattern) != mine.map(\.bitPattern) { same = false }
                    }
                }
            }
            #expect(same, "\(s): training forward differs from Attention.group")
        }
    }

    /// Backward vs central finite differences of the float64 loss L = Σ dOut ⊙ out(qkv)
    /// (h = 1e-5) for every element of qkv: max |dqkv − fd| / max |fd| ≤ 1e-4 for dQ, dK
    /// and dV separately. Shapes: head dim 8, 12 (not a multiple of 8) and 16, GQA groups
    /// 1, 2 and 3, two documents of 5 and 9 rows (gradients never cross them), and one of
    /// 35 rows (two of backward's 32-row blocks, a partial group of four positions).
    @Test func attentionBackwardMatchesFiniteDifferences() throws {
        let shapes = [Shape(heads: 2, kvHeads: 2, hd: 8, documents: [5, 9]),
                      Shape(heads: 2, kvHeads: 1, hd: 16, documents: [5, 9]),
                      Shape(heads: 3, kvHeads: 1, hd: 12, documents: [9, 5]),
                      Shape(heads: 4, kvHeads: 2, hd: 8, documents: [5, 9]),
                      Shape(heads: 2, kvHeads: 1, hd: 8, documents: [35, 4])]
        for s in shapes {
            let qkv = Self.random(s.rows * s.stride), dOut = Self.random(s.rows * s.d)
            let dqkv = try Self.run(qkv, dOut, s).dqkv
            let dO = dOut.map(Double.init)
            var x = qkv.map(Double.init)
            let loss = { (x: [Double]) -> Double in
                let out = Self.referenceForward(x, s).out
                var l = 0.0
                for i in 0..<out.count { l += out[i] * dO[i] }
                return l
            }
            let h = 1e-5
            var fd = [Double](repeating: 0, count: x.count)
            for e in 0..<x.count {
                let v = x[e]
                x[e] = v + h
                let up = loss(x)
                x[e] = v - h
                let down = loss(x)
                x[e] = v
                fd[e] = (up - down) / (2 * h)
            }
            for (name, cols) in [("dQ", 0..<s.d), ("dK", s.d..<(s.d + s.kvd)), ("dV", (s.d + s.kvd)..<s.stride)] {
                let err = Self.relativeError(dqkv, fd, stride: s.stride, cols: cols)
                #expect(err <= 1e-4, "\(name) \(s): \(err)")
            }
        }
    }

    /// Backward vs the float64 analytic backward on SmolLM2's attention shape (9 query
    /// heads, 3 kv heads, head dim 64) over three documents (37, 1 and 100 rows):
    /// max |diff| / max |ref| ≤ 1e-5 for dQ, dK and dV separately.
    @Test func attentionBackwardMatchesFloat64Analytic() throws {
        let s = Shape(heads: 9, kvHeads: 3, hd: 64, documents: [37, 1, 100])
        let qkv = Self.random(s.rows * s.stride), dOut = Self.random(s.rows * s.d)
        let dqkv = try Self.run(qkv, dOut, s).dqkv
        let ref = Self.referenceBackward(qkv.map(Double.init), dOut.map(Double.init), s)
        for (name, cols) in [("dQ", 0..<s.d), ("dK", s.d..<(s.d + s.kvd)), ("dV", (s.d + s.kvd)..<s.stride)] {
            let err = Self.relativeError(dqkv, ref, stride: s.stride, cols: cols)
            #expect(err <= 1e-5, "\(name): \(err)")
        }
    }

    /// Forward (out, stats) and backward (dqkv) are the same bits with 1 and 2 threads.
    @Test func attentionIsThreadCountInvariant() throws {
        defer { try? Parallel.setThreadCount(0) }
        let s = Shape(heads: 6, kvHeads: 2, hd: 32, documents: [20, 3, 41, 17])
        let qkv = Self.random(s.rows * s.stride), dOut = Self.random(s.rows * s.d)
        var results: [[Float]] = []
        for threads in [1, 2] {
            try Parallel.setThreadCount(threads)
            let r = try Self.run(qkv, dOut, s)
            results.append(r.out + r.stats + r.dqkv)
        }
        #expect(results[0].map(\.bitPattern) == results[1].map(\.bitPattern))
    }

    /// Inconsistent or overflowing shapes throw before anything is written.
    @Test func attentionRejectsBadShapes() throws {
        let qkv = [Float](repeating: 1, count: 4 * 24)
        var out = [Float](repeating: 7, count: 4 * 8), stats = [Float](repeating: 7, count: 4 * 2 * 2)
        for (heads, kvHeads, docs) in [(2, 2, [2, 1]), (2, 2, [3, 2]), (2, 2, [4, 0]), (3, 2, [4]), (2, 0, [4])] {
            #expect(throws: BatchCoreError.self) {
                try AttentionTraining.forward(qkv: qkv, rows: 4, documents: docs, heads: heads, kvHeads: kvHeads,
                                              headDim: 4, out: &out, stats: &stats)
            }
        }
        #expect(throws: BatchCoreError.self) {
            try AttentionTraining.forward(qkv: qkv, rows: 4, documents: [4], heads: 1 << 40, kvHeads: 1 << 40,
                                          headDim: 1 << 30, out: &out, stats: &stats)
        }
        #expect(out.allSatisfy { $0 == 7 } && stats.allSatisfy { $0 == 7 })
    }
}

extension ProjectionAttentionBackwardTests {
    /// dX from PackedWeights is bit-identical to dX from the row-major W (overwrite and
    /// accumulate, rows/cols off the 16-panel, tokens over several work items).
    @Test func inputGradientFromPackedWeightsIsBitIdentical() throws {
        for (rows, cols) in [(20, 37), (37, 64), (96, 20), (300, 145)] {
            let w = Self.random(rows * cols)
            let packed = try w.withUnsafeBufferPointer { try PackedWeights($0.baseAddress!, rows: rows, cols: cols) }
            for tokens in [1, 7, 33, 70] {
                for accumulate in [false, true] {
                    let dY = Self.random(tokens * rows), dX0 = Self.random(tokens * cols)
                    var a = dX0, b = dX0
                    ProjectionBackward.inputGradient(dY, ldDY: rows, tokens: tokens, weight: w, rows: rows, cols: cols,
                                                     &a, ldDX: cols, accumulate: accumulate)
                    ProjectionBackward.inputGradient(dY, ldDY: rows, tokens: tokens, packed: packed, &b, ldDX: cols,
                                                     accumulate: accumulate)
                    #expect(a.map(\.bitPattern) == b.map(\.bitPattern), "\(tokens)x\(rows)x\(cols) accumulate \(accumulate)")
                }
            }
        }
    }
}

extension ProjectionAttentionBackwardTests {
    /// dX (overwrite and accumulate) and dW on shapes that take every tiling of
    /// `ProjectionBackward` (one row item for ≤ 192 output rows, items of 24, 48 and 192
    /// rows, several column items, 6-row and 16-column edge tiles, reduction blocks with
    /// a tail, the 8-wide packing of dYᵀ) vs float64 with the float32 summation bound, and
    /// the same bits with 1, 2 and 3 threads.
    @Test func projectionGradientsMatchFloat64AndAreThreadCountInvariantOnAllTilings() throws {
        defer { try? Parallel.setThreadCount(0) }
        // (tokens, rows = output features, cols = input features)
        for (tokens, rows, cols) in [(150, 700, 77), (400, 45, 530), (1100, 13, 100), (61, 203, 1046)] {
            let w = Self.random(rows * cols), dY = Self.random(tokens * rows), x = Self.random(tokens * cols)
            let dX0 = Self.random(tokens * cols), dW0 = Self.random(rows * cols)
            var runs: [[Float]] = []
            for threads in [1, 2, 3] {
                try Parallel.setThreadCount(threads)
                var dX = [Float](repeating: .nan, count: tokens * cols), dXAcc = dX0, dW = dW0
                ProjectionBackward.inputGradient(dY, ldDY: rows, tokens: tokens, weight: w, rows: rows, cols: cols,
                                                 &dX, ldDX: cols)
                ProjectionBackward.inputGradient(dY, ldDY: rows, tokens: tokens, weight: w, rows: rows, cols: cols,
                                                 &dXAcc, ldDX: cols, accumulate: true)
                ProjectionBackward.weightGradient(dY, ldDY: rows, x, ldX: cols, tokens: tokens, rows: rows, cols: cols,
                                                  &dW)
                runs.append(dX + dXAcc + dW)
            }
            let shape = "\(tokens)x\(rows)x\(cols)"
            #expect(runs[1].map(\.bitPattern) == runs[0].map(\.bitPattern), "\(shape): 2 threads differ from 1")
            #expect(runs[2].map(\.bitPattern) == runs[0].map(\.bitPattern), "\(shape): 3 threads differ from 1")
            let r = runs[0]
            var worstX = 0.0, worstAcc = 0.0, worstW = 0.0
            for t in 0..<tokens {
                for k in 0..<cols {
                    var ref = 0.0, mag = 0.0
                    for o in 0..<rows {
                        let p = Double(dY[t * rows + o]) * Double(w[o * cols + k])
                        ref += p
                        mag += abs(p)
                    }
                    let i = t * cols + k, bound = Double(rows + 1) * 0x1p-24
                    worstX = max(worstX, abs(Double(r[i]) - ref) / (bound * mag))
                    let refAcc = ref + Double(dX0[i]), magAcc = mag + abs(Double(dX0[i]))
                    worstAcc = max(worstAcc, abs(Double(r[tokens * cols + i]) - refAcc) / (bound * magAcc))
                }
            }
            for o in 0..<rows {
                for k in 0..<cols {
                    var ref = Double(dW0[o * cols + k]), mag = abs(ref)
                    for t in 0..<tokens {
                        let p = Double(dY[t * rows + o]) * Double(x[t * cols + k])
                        ref += p
                        mag += abs(p)
                    }
                    let got = Double(r[2 * tokens * cols + o * cols + k])
                    worstW = max(worstW, abs(got - ref) / (Double(tokens + 1) * 0x1p-24 * mag))
                }
            }
            #expect(worstX <= 1, "dX \(shape): \(worstX) of the bound")
            #expect(worstAcc <= 1, "dX accumulate \(shape): \(worstAcc) of the bound")
            #expect(worstW <= 1, "dW \(shape): \(worstW) of the bound")
        }
    }
}
