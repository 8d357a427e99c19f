import BCCore
import BCKernels
import BCModel
import CSupport
import Foundation
import Testing

/// Training's bf16 products (`BF16GEMM`, `BF16Weights`) against float64 references on
/// fresh random inputs: each product equals the float64 sum over the bf16-ROUNDED operands
/// to the float32 summation bound, and the unrounded float64 product to the bf16 rounding
/// bound. Shapes cover the 8 × 32 tile edges, odd reductions (a last half-empty pair) and
/// several 256-step blocks. Results are the same bits on 1 and 2 threads, a forward row
/// alone equals it among others, and the bf16 copy made from the packed base equals the
/// one made from row-major values.
@Suite(.serialized, .enabled(if: BF16GEMM.isSupported)) struct BF16GEMMTests {
    static func random(_ n: Int, _ g: inout SplitMix64) -> [Float] { (0..<n).map { _ in g.uniform() } }

    /// bf16(x) as float: the values the products read (the C packers' conversion).
    static func rounded(_ x: [Float]) -> [Float] {
        var out = [Float](repeating: .nan, count: x.count)
        x.withUnsafeBufferPointer { s in out.withUnsafeMutableBufferPointer { bc_internal_bf16_round(s.baseAddress!, $0.baseAddress!, x.count) } }
        return out
    }

    /// Round to nearest even on the float's bits (an independent model of vcvtne2ps2bf16
    /// for normal values); denormals read as zero.
    static func softwareBF16(_ x: Float) -> Float {
        if x.isSubnormal { return x.sign == .minus ? -0.0 : 0 }
        let b = x.bitPattern
        let r = (b &+ 0x7FFF &+ ((b >> 16) & 1)) & 0xFFFF_0000
        return Float(bitPattern: r)
    }

    @Test func roundingIsNearestEven() {
        var g = SplitMix64(state: UInt64.random(in: 0...UInt64.max))
        var x = (0..<4099).map { _ in g.uniform() * Float(sign: .plus, exponent: Int(g.next() % 40) - 20, significand: 1) }
        x += [0, -0, 1, -1, 1.00390625, 1.01171875, Float.leastNormalMagnitude, Float.leastNonzeroMagnitude, -3e-39, 3.3895314e38]
        let r = Self.rounded(x)
        var bad = 0
        for (a, b) in zip(x, r) where Self.softwareBF16(a).bitPattern != b.bitPattern && !(Self.softwareBF16(a) == 0 && b == 0) { bad += 1 }
        #expect(bad == 0, "\(bad) values round differently from RNE")
    }

    /// |got − ref| against the two bounds; returns the worst ratio to each.
    static func check(_ got: Float, _ refRounded: Double, _ magRounded: Double, _ refExact: Double, _ magExact: Double,
                      steps: Int, start: Double = 0) -> (Double, Double) {
        let b1 = Double(steps + 2) * 0x1p-24 * (magRounded + abs(start)) + 1e-30
        let b2 = 0x1p-7 * magExact + Double(steps + 2) * 0x1p-24 * abs(start) + 1e-30
        return (abs(Double(got) - refRounded) / b1, abs(Double(got) - refExact) / b2)
    }

    @Test func productsMatchFloat64AndAreDeterministic() throws {
        defer { try? Parallel.setThreadCount(0) }
        var g = SplitMix64(state: UInt64.random(in: 0...UInt64.max))
        for (rows, cols, tokens) in [(1, 1, 1), (17, 7, 3), (45, 64, 9), (33, 257, 8), (70, 513, 300), (64, 96, 41)] {
            let w = Self.random(rows * cols, &g), x = Self.random(tokens * cols, &g), dY = Self.random(tokens * rows, &g)
            let dX0 = Self.random(tokens * cols, &g), dW0 = Self.random(rows * cols, &g)
            let wr = Self.rounded(w), xr = Self.rounded(x), dYr = Self.rounded(dY)
            let bw = try BF16Weights(rows: rows, cols: cols)
            w.withUnsafeBufferPointer { bw.update(rowMajor: $0.baseAddress!) }
            var results: [[Float]] = []
            for threads in [2, 1] {
                try Parallel.setThreadCount(threads)
                var y = [Float](repeating: .nan, count: tokens * rows)
                var dX = [Float](repeating: .nan, count: tokens * cols), dXacc = dX0, dW = dW0
                BF16GEMM.forward(x, ldx: cols, tokens: tokens, bw, &y, ldy: rows)
                BF16GEMM.inputGradient(dY, ldDY: rows, tokens: tokens, bw, &dX, ldDX: cols, accumulate: false)
                BF16GEMM.inputGradient(dY, ldDY: rows, tokens: tokens, bw, &dXacc, ldDX: cols, accumulate: true)
                BF16GEMM.weightGradient(dY, ldDY: rows, x, ldX: cols, tokens: tokens, rows: rows, cols: cols, &dW)
                results.append(y + dX + dXacc + dW)
                if threads == 1 { continue }
                var worst = (0.0, 0.0)
                func note(_ r: (Double, Double)) { worst = (max(worst.0, r.0), max(worst.1, r.1)) }
                for t in 0..<tokens {
                    for o in 0..<rows {   // y = x·Wᵀ
                        var ref = 0.0, mag = 0.0, ex = 0.0, exMag = 0.0
                        for k in 0..<cols {
                            let p = Double(xr[t * cols + k]) * Double(wr[o * cols + k]), q = Double(x[t * cols + k]) * Double(w[o * cols + k])
                            ref += p; mag += abs(p); ex += q; exMag += abs(q)
                        }
                        note(Self.check(y[t * rows + o], ref, mag, ex, exMag, steps: cols))
                    }
                    for k in 0..<cols {   // dX = dY·W (and + dX0)
                        var ref = 0.0, mag = 0.0, ex = 0.0, exMag = 0.0
                        for o in 0..<rows {
                            let p = Double(dYr[t * rows + o]) * Double(wr[o * cols + k]), q = Double(dY[t * rows + o]) * Double(w[o * cols + k])
                            ref += p; mag += abs(p); ex += q; exMag += abs(q)
                        }
                        note(Self.check(dX[t * cols + k], ref, mag, ex, exMag, steps: rows))
                        let s = Double(dX0[t * cols + k])
                        note(Self.check(dXacc[t * cols + k], ref + s, mag, ex + s, exMag, steps: rows, start: s))
                    }
                }
                for o in 0..<rows {   // dW += dYᵀ·X
                    for k in 0..<cols {
                        var ref = 0.0, mag = 0.0, ex = 0.0, exMag = 0.0
                        for t in 0..<tokens {
                            let p = Double(dYr[t * rows + o]) * Double(xr[t * cols + k]), q = Double(dY[t * rows + o]) * Double(x[t * cols + k])
                            ref += p; mag += abs(p); ex += q; exMag += abs(q)
                        }
                        let s = Double(dW0[o * cols + k])
                        note(Self.check(dW[o * cols + k], ref + s, mag, ex + s, exMag, steps: tokens, start: s))
                    }
                }
                #expect(worst.0 <= 1, "\(rows)x\(cols), \(tokens) tokens: \(worst.0) of the float32 summation bound (rounded operands)")
                #expect(worst.1 <= 1, "\(rows)x\(cols), \(tokens) tokens: \(worst.1) of the bf16 rounding bound (exact operands)")
                // A forward row alone: the same bits as among the others.
                var sameRows = true
                for t in Set([0, tokens / 2, tokens - 1]) {
                    var alone = [Float](repeating: .nan, count: rows)
                    Array(x[t * cols..<(t + 1) * cols]).withUnsafeBufferPointer {
                        BF16GEMM.forward($0.baseAddress!, ldx: cols, tokens: 1, bw, &alone, ldy: rows)
                    }
                    for o in 0..<rows where alone[o].bitPattern != y[t * rows + o].bitPattern { sameRows = false }
                }
                #expect(sameRows, "\(rows)x\(cols): a row alone differs from the batched row")
            }
            let differing = zip(results[0], results[1]).filter { $0.0.bitPattern != $0.1.bitPattern }.count
            #expect(differing == 0, "\(rows)x\(cols), \(tokens) tokens: \(differing) values differ between 2 threads and 1")
        }
    }

    /// `product` with each operand layout (A as rows or as columns of a step-major
    /// buffer, B as step rows or as M's rows) on LoRA-like shapes (a reduction or an
    /// output of rank 1–16, odd sizes), accumulating into random C: the float32 bound
    /// against float64 over the rounded operands.
    @Test func productLayoutsMatchFloat64() throws {
        var g = SplitMix64(state: UInt64.random(in: 0...UInt64.max))
        for (m, n, steps) in [(37, 16, 77), (16, 45, 300), (70, 3, 9), (5, 33, 16), (1, 1, 1)] {
            let a = Self.random(m * steps, &g), b = Self.random(steps * n, &g), c0 = Self.random(m * n, &g)
            let ar = Self.rounded(a), br = Self.rounded(b)
            // A(i, s) = a[i·steps + s] (.rows) or a[s·m + i] (.steps of the transposed copy);
            // B(s, j) = b[s·n + j] (.steps) or b[j·steps + s] (.rows of the transposed copy).
            var aT = [Float](repeating: 0, count: m * steps), bT = [Float](repeating: 0, count: steps * n)
            for i in 0..<m { for s in 0..<steps { aT[s * m + i] = a[i * steps + s] } }
            for s in 0..<steps { for j in 0..<n { bT[j * steps + s] = b[s * n + j] } }
            for (ai, bi) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                var c = c0
                a.withUnsafeBufferPointer { ap in aT.withUnsafeBufferPointer { atp in
                    b.withUnsafeBufferPointer { bp in bT.withUnsafeBufferPointer { btp in
                        let opA: BF16GEMM.Operand = ai == 0 ? .rows(ap.baseAddress!, ld: steps) : .steps(atp.baseAddress!, ld: m)
                        let opB: BF16GEMM.Operand = bi == 0 ? .steps(bp.baseAddress!, ld: n) : .rows(btp.baseAddress!, ld: steps)
                        BF16GEMM.product(opA, opB, m: m, n: n, steps: steps, &c, ldc: n, accumulate: true)
                    } }
                } }
                var worst = 0.0
                for i in 0..<m {
                    for j in 0..<n {
                        var ref = Double(c0[i * n + j]), mag = abs(ref)
                        for s in 0..<steps {
                            let p = Double(ar[i * steps + s]) * Double(br[s * n + j])
                            ref += p; mag += abs(p)
                        }
                        worst = max(worst, abs(Double(c[i * n + j]) - ref) / (Double(steps + 2) * 0x1p-24 * mag + 1e-30))
                    }
                }
                #expect(worst <= 1, "\(m)x\(n)x\(steps) layouts \(ai)\(bi): \(worst) of the bound")
            }
        }
    }

    /// `inputGradient(outputs:)`: the sum over a run of W's rows only (the head's
    /// vocabulary blocks), against float64 over the same rows of the rounded operands.
    @Test func inputGradientOverARunOfRows() throws {
        var g = SplitMix64(state: UInt64.random(in: 0...UInt64.max))
        let rows = 301, cols = 70, tokens = 13
        let w = Self.random(rows * cols, &g), dY = Self.random(tokens * rows, &g)
        let wr = Self.rounded(w), dYr = Self.rounded(dY)
        let bw = try BF16Weights(rows: rows, cols: cols)
        w.withUnsafeBufferPointer { bw.update(rowMajor: $0.baseAddress!) }
        for run in [0..<rows, 0..<256, 256..<rows, 100..<257, 2..<3] {
            var dX = [Float](repeating: .nan, count: tokens * cols)
            BF16GEMM.inputGradient(dY, ldDY: rows, tokens: tokens, bw, &dX, ldDX: cols, accumulate: false, outputs: run)
            var worst = 0.0
            for t in 0..<tokens {
                for k in 0..<cols {
                    var ref = 0.0, mag = 0.0
                    for o in run {
                        let p = Double(dYr[t * rows + o]) * Double(wr[o * cols + k])
                        ref += p; mag += abs(p)
                    }
                    worst = max(worst, abs(Double(dX[t * cols + k]) - ref) / (Double(run.count + 2) * 0x1p-24 * mag + 1e-30))
                }
            }
            #expect(worst <= 1, "rows \(run): \(worst) of the bound")
        }
    }

    /// `Linear.enableBF16` on a frozen (packed-only) projection fills the bf16 copy from
    /// the packed values; on a trainable one from the row-major copy; both equal
    /// `update(rowMajor:)` of the original values (compared through their products), and
    /// `syncPacked` refreshes it after the values change.
    @Test func bf16CopyFollowsTheWeights() throws {
        var g = SplitMix64(state: UInt64.random(in: 0...UInt64.max))
        let rows = 77, cols = 45, tokens = 11
        let w = Self.random(rows * cols, &g), x = Self.random(tokens * cols, &g)
        func product(_ b: BF16Weights) -> [Float] {
            var y = [Float](repeating: .nan, count: tokens * rows)
            BF16GEMM.forward(x, ldx: cols, tokens: tokens, b, &y, ldy: rows)
            return y
        }
        let direct = try BF16Weights(rows: rows, cols: cols)
        w.withUnsafeBufferPointer { direct.update(rowMajor: $0.baseAddress!) }
        let want = product(direct)
        let frozen = try w.withUnsafeBufferPointer { try Linear(rows: rows, cols: cols, rowMajor: $0.baseAddress!) }
        try frozen.enableBF16()
        #expect(product(try #require(frozen.bf16)).map(\.bitPattern) == want.map(\.bitPattern))
        let trained = try w.withUnsafeBufferPointer { try Linear(rows: rows, cols: cols, rowMajor: $0.baseAddress!) }
        try trained.makeTrainable()
        try trained.enableBF16()
        #expect(product(try #require(trained.bf16)).map(\.bitPattern) == want.map(\.bitPattern))
        // New values: the bf16 copy follows at syncPacked.
        let w2 = Self.random(rows * cols, &g)
        try #require(trained.weight).update(from: w2, count: rows * cols)
        try trained.syncPacked()
        let again = try BF16Weights(rows: rows, cols: cols)
        w2.withUnsafeBufferPointer { again.update(rowMajor: $0.baseAddress!) }
        #expect(product(try #require(trained.bf16)).map(\.bitPattern) == product(again).map(\.bitPattern))
        #expect(product(again).map(\.bitPattern) != want.map(\.bitPattern))
        trained.dropBF16()
        #expect(trained.bf16 == nil)
    }
}
