import BCCore
import BCKernels
import Foundation
import Testing

/// The training pass's row-wise forward/backward pairs (Kernels/Backward) against float64
/// references on seeded random inputs of odd sizes: each forward vs the float64 forward,
/// each backward vs central finite differences of the float64 forward (h = 1e-5 in double,
/// truncation error ~1e-10, far below the float32 tolerances), and determinism across
/// thread counts and row splits.
///
/// Tolerances: a gradient tensor agrees when max |kernel − fd| ≤ tol · max |fd| over the
/// tensor (tol stated per test; float32 arithmetic gives ~1e-7 relative per element).
@Suite(.serialized) struct BackwardKernelTests {
    static func random(_ n: Int, _ lo: Float, _ hi: Float, _ g: inout SplitMix64) -> [Float] {
        (0..<n).map { _ in lo + (hi - lo) * (g.uniform() + 1) / 2 }
    }

    static func bits(_ a: [Float]) -> [UInt32] { a.map(\.bitPattern) }

    /// max |a − b| / max |b| (b the reference).
    static func relError(_ a: [Float], _ b: [Double]) -> Double {
        precondition(a.count == b.count)
        var worst = 0.0, scale = 0.0
        for i in b.indices {
            worst = max(worst, abs(Double(a[i]) - b[i]))
            scale = max(scale, abs(b[i]))
        }
        return worst / max(scale, 1e-300)
    }

    /// Central finite differences of f at p, one coordinate at a time.
    static func fd(_ p: [Double], h: Double = 1e-5, _ f: ([Double]) -> Double) -> [Double] {
        var q = p
        return p.indices.map { i in
            q[i] = p[i] + h
            let up = f(q)
            q[i] = p[i] - h
            let down = f(q)
            q[i] = p[i]
            return (up - down) / (2 * h)
        }
    }

    static func withThreads<T>(_ n: Int, _ body: () throws -> T) rethrows -> T {
        try! Parallel.setThreadCount(n)
        defer { try! Parallel.setThreadCount(0) }
        return try body()
    }

    // MARK: RMSNorm

    /// float64 RMSNorm of rows × d.
    static func rmsNormRef(_ x: [Double], _ g: [Double], rows: Int, d: Int, eps: Double) -> [Double] {
        var y = [Double](repeating: 0, count: rows * d)
        for t in 0..<rows {
            var ss = 0.0
            for j in 0..<d { ss += x[t * d + j] * x[t * d + j] }
            let r = 1 / (ss / Double(d) + eps).squareRoot()
            for j in 0..<d { y[t * d + j] = x[t * d + j] * r * g[j] }
        }
        return y
    }

    /// Forward ≤ 1e-6 of the row max vs float64, rstd ≤ 1e-6 relative; dx and dg vs finite
    /// differences of Σ dy·y ≤ 2e-5; dg accumulates onto its prior contents.
    @Test func rmsNormMatchesFiniteDifferences() {
        var rng = SplitMix64(state: 0x5EED_0001)
        let eps: Float = 1e-5, rows = 5
        for d in [20, 37, 64, 80] {
            let x = Self.random(rows * d, -2, 2, &rng), g = Self.random(d, 0.5, 1.5, &rng)
            let dy = Self.random(rows * d, -1, 1, &rng), dg0 = Self.random(d, -1, 1, &rng)
            var y = [Float](repeating: .nan, count: rows * d), rstd = [Float](repeating: .nan, count: rows)
            RMSNormOp.forward(x: x, g: g, y: &y, rstd: &rstd, rows: rows, d: d, eps: eps)
            let xd = x.map(Double.init), gd = g.map(Double.init), dyd = dy.map(Double.init)
            let yRef = Self.rmsNormRef(xd, gd, rows: rows, d: d, eps: Double(eps))
            #expect(Self.relError(y, yRef) <= 1e-6, "forward d=\(d)")
            for t in 0..<rows {
                let ss = (0..<d).reduce(0.0) { $0 + xd[t * d + $1] * xd[t * d + $1] }
                let r = 1 / (ss / Double(d) + Double(eps)).squareRoot()
                #expect(abs(Double(rstd[t]) - r) <= 1e-6 * r, "rstd d=\(d) t=\(t)")
            }
            let loss = { (x: [Double], g: [Double]) -> Double in
                zip(Self.rmsNormRef(x, g, rows: rows, d: d, eps: Double(eps)), dyd).reduce(0.0) { $0 + $1.0 * $1.1 }
            }
            let dxRef = Self.fd(xd) { loss($0, gd) }
            let dgRef = zip(Self.fd(gd) { loss(xd, $0) }, dg0).map { $0 + Double($1) }
            var dx = [Float](repeating: .nan, count: rows * d), dg = dg0
            RMSNormOp.backward(dy: dy, x: x, g: g, rstd: rstd, dx: &dx, dg: &dg, rows: rows, d: d)
            let ex = Self.relError(dx, dxRef), eg = Self.relError(dg, dgRef)
            #expect(ex <= 2e-5, "dx d=\(d): \(ex)")
            #expect(eg <= 2e-5, "dg d=\(d): \(eg)")
            // In place (dx = dy) gives the same bits.
            var inPlace = dy, dg2 = dg0
            inPlace.withUnsafeMutableBufferPointer { b in
                RMSNormOp.backward(dy: b.baseAddress!, x: x, g: g, rstd: rstd, dx: b.baseAddress!, dg: &dg2, rows: rows, d: d)
            }
            #expect(Self.bits(inPlace) == Self.bits(dx) && Self.bits(dg2) == Self.bits(dg), "in place d=\(d)")
        }
    }

    /// RMSNorm backward: the same bits with 1 or 2 threads and with the rows in one call or
    /// split over two (dg accumulating across the calls).
    @Test func rmsNormBackwardIsDeterministic() {
        var rng = SplitMix64(state: 0x5EED_0002)
        let rows = 37, d = 208
        let x = Self.random(rows * d, -2, 2, &rng), g = Self.random(d, 0.5, 1.5, &rng)
        let dy = Self.random(rows * d, -1, 1, &rng), dg0 = Self.random(d, -1, 1, &rng)
        var y = [Float](repeating: 0, count: rows * d), rstd = [Float](repeating: 0, count: rows)
        RMSNormOp.forward(x: x, g: g, y: &y, rstd: &rstd, rows: rows, d: d, eps: 1e-5)
        func run(threads: Int, split: Int?) -> ([UInt32], [UInt32]) {
            Self.withThreads(threads) {
                var dx = [Float](repeating: .nan, count: rows * d), dg = dg0
                let parts = split.map { [0..<$0, $0..<rows] } ?? [0..<rows]
                dx.withUnsafeMutableBufferPointer { dxp in
                    for p in parts {
                        RMSNormOp.backward(dy: dy.withUnsafeBufferPointer { $0.baseAddress! } + p.lowerBound * d,
                                           x: x.withUnsafeBufferPointer { $0.baseAddress! } + p.lowerBound * d,
                                           g: g, rstd: rstd.withUnsafeBufferPointer { $0.baseAddress! } + p.lowerBound,
                                           dx: dxp.baseAddress! + p.lowerBound * d, dg: &dg, rows: p.count, d: d)
                    }
                }
                return (Self.bits(dx), Self.bits(dg))
            }
        }
        let base = run(threads: 1, split: nil)
        for (threads, split) in [(2, nil), (1, 11), (2, 20)] as [(Int, Int?)] {
            let other = run(threads: threads, split: split)
            #expect(other.0 == base.0 && other.1 == base.1, "threads \(threads) split \(String(describing: split))")
        }
    }

    // MARK: RoPE

    /// Forward vs the float64 rotation ≤ 1e-5 absolute (|x| ≤ 1); backward vs finite
    /// differences of Σ dy·R x ≤ 1e-5 for the q heads and the k heads of a qkv-layout row
    /// (ld = q + k + v widths; the v part is untouched); backward ∘ forward ≈ identity.
    @Test func ropeMatchesFiniteDifferences() {
        var rng = SplitMix64(state: 0x5EED_0003)
        let positions = [0, 5, 123, 4097]
        let rows = positions.count
        for hd in [20, 64, 80] {
            let rope = RotaryEmbedding(headDim: hd, base: 10000)
            var tables = [Float](repeating: 0, count: rows * hd)
            for t in 0..<rows { tables.withUnsafeMutableBufferPointer { rope.table(position: positions[t], into: $0.baseAddress! + t * hd) } }
            let qHeads = 3, kHeads = 1, ld = (qHeads + 2 * kHeads) * hd
            // The table's angles are llama.cpp's (RotaryEmbedding: Float(pos) times
            // powf(base, -2/hd) i times, in float; within pos·θ_i·(i + 1)·2⁻²² of exact,
            // VectorMathTests.ropeMatchesFloat64): the reference rotates by those.
            let ratio = powf(10000, -2 / Float(hd))
            let angles: [[Double]] = positions.map { p in
                var a = Float(p)
                return (0..<hd / 2).map { _ in defer { a *= ratio }; return Double(a) }
            }
            func rotateRef(_ v: [Double], heads: Int, offset: Int, sign: Double) -> [Double] {
                var out = v
                for t in 0..<rows {
                    for h in 0..<heads {
                        for i in 0..<hd / 2 {
                            let theta = sign * angles[t][i]
                            let k = t * ld + offset + h * hd + 2 * i
                            out[k] = v[k] * cos(theta) - v[k + 1] * sin(theta)
                            out[k + 1] = v[k] * sin(theta) + v[k + 1] * cos(theta)
                        }
                    }
                }
                return out
            }
            let x = Self.random(rows * ld, -1, 1, &rng), dy = Self.random(rows * ld, -1, 1, &rng)
            for (heads, offset) in [(qHeads, 0), (kHeads, qHeads * hd)] {
                var y = x
                y.withUnsafeMutableBufferPointer { b in
                    tables.withUnsafeBufferPointer { RoPEOp.forward(rope, b.baseAddress! + offset, ld: ld, heads: heads, tables: $0.baseAddress!, rows: rows) }
                }
                let yRef = rotateRef(x.map(Double.init), heads: heads, offset: offset, sign: 1)
                let fwdErr = zip(y, yRef).map { abs(Double($0) - $1) }.max()!
                #expect(fwdErr <= 1e-5, "forward hd=\(hd) heads=\(heads): \(fwdErr)")
                let dyd = dy.map(Double.init)
                let dxRef = Self.fd(x.map(Double.init)) { v in
                    zip(rotateRef(v, heads: heads, offset: offset, sign: 1), dyd).reduce(0.0) { $0 + $1.0 * $1.1 }
                }
                var dx = dy
                dx.withUnsafeMutableBufferPointer { b in
                    tables.withUnsafeBufferPointer { RoPEOp.backward(rope, b.baseAddress! + offset, ld: ld, heads: heads, tables: $0.baseAddress!, rows: rows) }
                }
                let e = Self.relError(dx, dxRef)
                #expect(e <= 1e-5, "backward hd=\(hd) heads=\(heads): \(e)")
                // Untouched outside the rotated heads, and the round trip returns x.
                for t in 0..<rows {
                    for k in 0..<ld where k < offset || k >= offset + heads * hd {
                        #expect(dx[t * ld + k].bitPattern == dy[t * ld + k].bitPattern && y[t * ld + k].bitPattern == x[t * ld + k].bitPattern)
                    }
                }
                var back = y
                back.withUnsafeMutableBufferPointer { b in
                    tables.withUnsafeBufferPointer { RoPEOp.backward(rope, b.baseAddress! + offset, ld: ld, heads: heads, tables: $0.baseAddress!, rows: rows) }
                }
                #expect(zip(back, x).allSatisfy { abs($0 - $1) <= 1e-6 }, "round trip hd=\(hd)")
            }
        }
    }

    // MARK: SwiGLU

    static func silu(_ g: Double) -> Double { g / (1 + exp(-g)) }

    /// Forward ≤ 2e-6 relative vs float64; dgate, dup vs finite differences of Σ dact·act
    /// ≤ 1e-5, over the model's gate | up row layout (ldIn = 2n); in place (dgate = gate,
    /// dup = up) gives the same bits.
    @Test func swigluMatchesFiniteDifferences() {
        var rng = SplitMix64(state: 0x5EED_0004)
        let rows = 3
        for n in [20, 37, 64, 80] {
            let ld = 2 * n
            let gateUp = Self.random(rows * ld, -8, 8, &rng), dact = Self.random(rows * n, -1, 1, &rng)
            var act = [Float](repeating: .nan, count: rows * n)
            gateUp.withUnsafeBufferPointer { b in
                SwiGLUOp.forward(gate: b.baseAddress!, up: b.baseAddress! + n, ldIn: ld, act: &act, ldAct: n, rows: rows, n: n)
            }
            func ref(_ v: [Double]) -> [Double] {
                (0..<rows * n).map { k in let t = k / n, j = k % n; return Self.silu(v[t * ld + j]) * v[t * ld + n + j] }
            }
            let gud = gateUp.map(Double.init), dd = dact.map(Double.init)
            let actRef = ref(gud)
            #expect(zip(act, actRef).allSatisfy { abs(Double($0) - $1) <= 2e-6 * abs($1) + 1e-30 }, "forward n=\(n)")
            let dRef = Self.fd(gud) { v in zip(ref(v), dd).reduce(0.0) { $0 + $1.0 * $1.1 } }
            var dgu = [Float](repeating: .nan, count: rows * ld)
            gateUp.withUnsafeBufferPointer { b in
                dgu.withUnsafeMutableBufferPointer { o in
                    SwiGLUOp.backward(dact: dact, ldAct: n, gate: b.baseAddress!, up: b.baseAddress! + n, ldIn: ld,
                                      dgate: o.baseAddress!, dup: o.baseAddress! + n, rows: rows, n: n)
                }
            }
            let e = Self.relError(dgu, dRef)
            #expect(e <= 1e-5, "backward n=\(n): \(e)")
            var inPlace = gateUp
            inPlace.withUnsafeMutableBufferPointer { b in
                SwiGLUOp.backward(dact: dact, ldAct: n, gate: b.baseAddress!, up: b.baseAddress! + n, ldIn: ld,
                                  dgate: b.baseAddress!, dup: b.baseAddress! + n, rows: rows, n: n)
            }
            #expect(Self.bits(inPlace) == Self.bits(dgu), "in place n=\(n)")
        }
    }

    /// Saturated gates (|g| up to 200, past exp's overflow/underflow) give finite gradients
    /// equal to the float64 derivative within 1e-5 relative (+1e-30 for the exact zeros).
    @Test func swigluBackwardSaturates() {
        let gate: [Float] = [-200, -100, -89, -88, -30, 30, 88, 89, 100, 200, 0.5, -0.5]
        let n = gate.count
        let up = [Float](repeating: 0.75, count: n), dact = [Float](repeating: -1.25, count: n)
        var dgate = [Float](repeating: .nan, count: n), dup = [Float](repeating: .nan, count: n)
        SwiGLUOp.backward(dact: dact, ldAct: n, gate: gate, up: up, ldIn: n, dgate: &dgate, dup: &dup, rows: 1, n: n)
        for j in 0..<n {
            let g = Double(gate[j]), s = 1 / (1 + exp(-g))
            let dgRef = -1.25 * 0.75 * s * (1 + g * (1 - s)), duRef = -1.25 * g * s
            #expect(abs(Double(dgate[j]) - dgRef) <= 1e-5 * abs(dgRef) + 1e-30, "dgate g=\(g): \(dgate[j]) vs \(dgRef)")
            #expect(abs(Double(dup[j]) - duRef) <= 1e-5 * abs(duRef) + 1e-30, "dup g=\(g): \(dup[j]) vs \(duRef)")
        }
    }

    // MARK: Cross-entropy

    /// float64 Σ over target rows of −log softmax(l)[target].
    static func crossEntropyRef(_ l: [Double], _ targets: [Int32], vocab: Int) -> Double {
        var sum = 0.0
        for (t, target) in targets.enumerated() where target >= 0 {
            let row = l[t * vocab..<(t + 1) * vocab]
            let m = row.max()!
            let lse = m + log(row.reduce(0.0) { $0 + exp($1 - m) })
            sum += lse - row[t * vocab + Int(target)]
        }
        return sum
    }

    /// Forward: the summed loss ≤ 1e-6 relative of float64 and the target count; backward
    /// with scale = 1/N, N the targets of the whole step (this micro-batch AND another
    /// one): dlogits vs finite differences of the step's mean loss w.r.t. this micro-batch's
    /// logits ≤ 1e-5; masked rows (target −1) exactly 0; in place = out of place.
    @Test func crossEntropyMatchesFiniteDifferences() throws {
        var rng = SplitMix64(state: 0x5EED_0005)
        let rows = 6
        for vocab in [37, 80, 1003] {
            let logits = Self.random(rows * vocab, -8, 8, &rng)
            let targets: [Int32] = [3, -1, Int32(vocab - 1), 0, -1, Int32(vocab / 2)]
            // The other micro-batch of the same optimizer step: 3 rows, 2 targets.
            let other = Self.random(3 * vocab, -8, 8, &rng), otherTargets: [Int32] = [1, -1, 2]
            let totals = try CrossEntropyOp.forward(logits: logits, targets: targets, rows: rows, vocab: vocab)
            let lossRef = Self.crossEntropyRef(logits.map(Double.init), targets, vocab: vocab)
            #expect(totals.targets == 4)
            #expect(abs(totals.lossSum - lossRef) <= 1e-6 * lossRef, "forward V=\(vocab): \(totals.lossSum) vs \(lossRef)")
            let otherTotals = try CrossEntropyOp.forward(logits: other, targets: otherTargets, rows: 3, vocab: vocab)
            let stepTargets = totals.targets + otherTotals.targets
            let otherLoss = Self.crossEntropyRef(other.map(Double.init), otherTargets, vocab: vocab)
            let dRef = Self.fd(logits.map(Double.init)) { l in
                (Self.crossEntropyRef(l, targets, vocab: vocab) + otherLoss) / Double(stepTargets)
            }
            var dl = [Float](repeating: .nan, count: rows * vocab)
            try CrossEntropyOp.backward(logits: logits, targets: targets, dlogits: &dl, rows: rows, vocab: vocab,
                                        scale: 1 / Float(stepTargets))
            let e = Self.relError(dl, dRef)
            #expect(e <= 1e-5, "backward V=\(vocab): \(e)")
            for t in 0..<rows where targets[t] < 0 {
                #expect(dl[t * vocab..<(t + 1) * vocab].allSatisfy { $0.bitPattern == 0 }, "masked row \(t)")
            }
            var inPlace = logits
            try inPlace.withUnsafeMutableBufferPointer { b in
                try CrossEntropyOp.backward(logits: b.baseAddress!, targets: targets, dlogits: b.baseAddress!, rows: rows,
                                            vocab: vocab, scale: 1 / Float(stepTargets))
            }
            #expect(Self.bits(inPlace) == Self.bits(dl), "in place V=\(vocab)")
        }
    }

    /// Large logits (±1e4, a row max far from the rest) stay finite: the max is subtracted.
    @Test func crossEntropyIsStable() throws {
        let vocab = 33
        var logits = [Float](repeating: -1e4, count: vocab)
        logits[7] = 1e4
        logits[8] = 1e4 - 2
        let totals = try CrossEntropyOp.forward(logits: logits, targets: [8], rows: 1, vocab: vocab)
        let ref = log(1 + exp(-2.0)) + 2   // −log softmax at 8: lse − l8 with the rest underflowing
        #expect(abs(totals.lossSum - ref) <= 1e-6, "\(totals.lossSum) vs \(ref)")
        var dl = [Float](repeating: .nan, count: vocab)
        try CrossEntropyOp.backward(logits: logits, targets: [8], dlogits: &dl, rows: 1, vocab: vocab, scale: 1)
        #expect(dl.allSatisfy { $0.isFinite })
        #expect(abs(Double(dl[7]) - 1 / (1 + exp(-2.0))) <= 1e-6)
    }

    /// A target outside −1..<V (or a non-finite scale) throws and leaves every output as it
    /// was; the forward's totals too.
    @Test func crossEntropyRejectsBadTargets() {
        let vocab = 9
        var rng = SplitMix64(state: 0x5EED_0006)
        let logits = Self.random(2 * vocab, -1, 1, &rng)
        for bad: [Int32] in [[1, 9], [-2, 0], [Int32.max, 1], [Int32.min, 1]] {
            var totals = CrossEntropyTotals(lossSum: 1.5, targets: 2)
            #expect(throws: BatchCoreError.self) {
                try CrossEntropyOp.forward(logits: logits, targets: bad, rows: 2, vocab: vocab, into: &totals)
            }
            #expect(totals == CrossEntropyTotals(lossSum: 1.5, targets: 2))
            var dl = [Float](repeating: 42, count: 2 * vocab)
            #expect(throws: BatchCoreError.self) {
                try CrossEntropyOp.backward(logits: logits, targets: bad, dlogits: &dl, rows: 2, vocab: vocab, scale: 1)
            }
            #expect(dl.allSatisfy { $0 == 42 })
        }
        var dl = [Float](repeating: 42, count: 2 * vocab)
        #expect(throws: BatchCoreError.self) {
            try CrossEntropyOp.backward(logits: logits, targets: [1, 2], dlogits: &dl, rows: 2, vocab: vocab, scale: .nan)
        }
        #expect(dl.allSatisfy { $0 == 42 })
    }

    /// Cross-entropy: the same bits (loss double and dlogits) with 1 or 2 threads and with
    /// the rows in one call or several (totals accumulating across the calls, which add
    /// row by row: a per-call partial sum would round differently).
    @Test func crossEntropyIsDeterministic() throws {
        var rng = SplitMix64(state: 0x5EED_0007)
        let rows = 23, vocab = 517
        let logits = Self.random(rows * vocab, -20, 20, &rng)
        let targets: [Int32] = (0..<rows).map { t in t % 5 == 2 ? -1 : Int32((t * 131) % vocab) }
        func run(threads: Int, cuts: [Int]) throws -> (UInt64, Int, [UInt32]) {
            try Self.withThreads(threads) {
                var totals = CrossEntropyTotals()
                var dl = [Float](repeating: .nan, count: rows * vocab)
                let bounds = [0] + cuts + [rows]
                try logits.withUnsafeBufferPointer { l in
                    try targets.withUnsafeBufferPointer { tg in
                        try dl.withUnsafeMutableBufferPointer { o in
                            for k in 0..<bounds.count - 1 {
                                let p = bounds[k]..<bounds[k + 1]
                                try CrossEntropyOp.forward(logits: l.baseAddress! + p.lowerBound * vocab, targets: tg.baseAddress! + p.lowerBound,
                                                           rows: p.count, vocab: vocab, into: &totals)
                                try CrossEntropyOp.backward(logits: l.baseAddress! + p.lowerBound * vocab, targets: tg.baseAddress! + p.lowerBound,
                                                            dlogits: o.baseAddress! + p.lowerBound * vocab, rows: p.count, vocab: vocab, scale: 1 / 19)
                            }
                        }
                    }
                }
                return (totals.lossSum.bitPattern, totals.targets, Self.bits(dl))
            }
        }
        let base = try run(threads: 1, cuts: [])
        #expect(base.1 == targets.filter { $0 >= 0 }.count)
        for (threads, cuts) in [(2, []), (1, [7]), (2, [16]), (1, Array(stride(from: 3, to: rows, by: 3))),
                                (2, Array(stride(from: 4, to: rows, by: 4)))] as [(Int, [Int])] {
            let other = try run(threads: threads, cuts: cuts)
            #expect(other.0 == base.0 && other.1 == base.1 && other.2 == base.2, "threads \(threads) cuts \(cuts)")
        }
    }

    // MARK: Embedding

    /// Forward copies the table rows exactly; backward vs finite differences of Σ dx·E[tokens]
    /// ≤ 1e-6 (repeated tokens, accumulated onto a dTable already holding another
    /// gradient, as the tied head's dW); tokens out of range throw and change nothing.
    @Test func embeddingMatchesFiniteDifferences() throws {
        var rng = SplitMix64(state: 0x5EED_0008)
        let vocab = 11, rows = 30
        for d in [20, 37] {
            let table = Self.random(vocab * d, -1, 1, &rng)
            let tokens: [Int32] = (0..<rows).map { _ in Int32(rng.next() % UInt64(vocab - 2)) }   // tokens 9, 10 unused
            var x = [Float](repeating: .nan, count: rows * d)
            try EmbeddingOp.forward(tokens: tokens, rows: rows, table: table, vocab: vocab, d: d, x: &x)
            for t in 0..<rows { #expect(Array(x[t * d..<(t + 1) * d]) == Array(table[Int(tokens[t]) * d..<(Int(tokens[t]) + 1) * d])) }
            let dx = Self.random(rows * d, -1, 1, &rng), head = Self.random(vocab * d, -1, 1, &rng)
            let dxd = dx.map(Double.init)
            let fdRef = Self.fd(table.map(Double.init)) { e in
                var s = 0.0
                for t in 0..<rows { for j in 0..<d { s += dxd[t * d + j] * e[Int(tokens[t]) * d + j] } }
                return s
            }
            let ref = zip(fdRef, head).map { $0 + Double($1) }
            var dTable = head
            try EmbeddingOp.backward(tokens: tokens, rows: rows, dx: dx, d: d, dTable: &dTable, vocab: vocab)
            let e = Self.relError(dTable, ref)
            #expect(e <= 1e-6, "backward d=\(d): \(e)")
            #expect(Array(dTable[9 * d..<vocab * d]) == Array(head[9 * d..<vocab * d]), "unused tokens untouched")
            for bad: [Int32] in [[0, 11], [-1, 0], [Int32.min, 0]] {
                var out = [Float](repeating: 42, count: 2 * d), dT = head
                #expect(throws: BatchCoreError.self) { try EmbeddingOp.forward(tokens: bad, rows: 2, table: table, vocab: vocab, d: d, x: &out) }
                #expect(throws: BatchCoreError.self) { try EmbeddingOp.backward(tokens: bad, rows: 2, dx: dx, d: d, dTable: &dT, vocab: vocab) }
                #expect(out.allSatisfy { $0 == 42 } && Self.bits(dT) == Self.bits(head))
            }
        }
    }

    /// Embedding backward: the same bits with 1 or 2 threads and with the rows in one call
    /// or two, many rows per token (the summation order is per token, in row order).
    @Test func embeddingBackwardIsDeterministic() throws {
        var rng = SplitMix64(state: 0x5EED_0009)
        let vocab = 50, rows = 301, d = 37
        let tokens: [Int32] = (0..<rows).map { _ in Int32(rng.next() % UInt64(vocab)) }
        let dx = Self.random(rows * d, -1, 1, &rng), head = Self.random(vocab * d, -1, 1, &rng)
        func run(threads: Int, split: Int?) throws -> [UInt32] {
            try Self.withThreads(threads) {
                var dTable = head
                let parts = split.map { [0..<$0, $0..<rows] } ?? [0..<rows]
                try tokens.withUnsafeBufferPointer { tk in
                    try dx.withUnsafeBufferPointer { g in
                        for p in parts {
                            try EmbeddingOp.backward(tokens: tk.baseAddress! + p.lowerBound, rows: p.count, dx: g.baseAddress! + p.lowerBound * d,
                                                     d: d, dTable: &dTable, vocab: vocab)
                        }
                    }
                }
                return Self.bits(dTable)
            }
        }
        let base = try run(threads: 1, split: nil)
        for (threads, split) in [(2, nil), (1, 100), (2, 150)] as [(Int, Int?)] {
            #expect(try run(threads: threads, split: split) == base, "threads \(threads) split \(String(describing: split))")
        }
    }

    /// The row-independent pairs (RMSNorm forward, RoPE forward/backward, SwiGLU
    /// forward/backward): the same bits with 1 or 2 threads and with the rows in one call
    /// or two.
    @Test func rowIndependentOpsAreDeterministic() {
        var rng = SplitMix64(state: 0x5EED_000B)
        let rows = 41, n = 83, hd = 64, heads = 3
        let x = Self.random(rows * 2 * n, -6, 6, &rng), g = Self.random(2 * n, 0.5, 1.5, &rng)
        let dact = Self.random(rows * n, -1, 1, &rng), q = Self.random(rows * heads * hd, -1, 1, &rng)
        let rope = RotaryEmbedding(headDim: hd, base: 10000)
        var tables = [Float](repeating: 0, count: rows * hd)
        for t in 0..<rows { tables.withUnsafeMutableBufferPointer { rope.table(position: 7 * t + 1, into: $0.baseAddress! + t * hd) } }
        func run(threads: Int, cut: Int?) -> [[UInt32]] {
            Self.withThreads(threads) {
                var y = [Float](repeating: .nan, count: rows * 2 * n), rstd = [Float](repeating: .nan, count: rows)
                var act = [Float](repeating: .nan, count: rows * n), dgu = [Float](repeating: .nan, count: rows * 2 * n)
                var rot = q, back = q
                let bounds = [0] + (cut.map { [$0] } ?? []) + [rows]
                x.withUnsafeBufferPointer { xp in
                    let xb = xp.baseAddress!
                    for k in 0..<bounds.count - 1 {
                        let lo = bounds[k], m = bounds[k + 1] - lo
                        y.withUnsafeMutableBufferPointer { yp in
                            rstd.withUnsafeMutableBufferPointer { rp in
                                RMSNormOp.forward(x: xb + lo * 2 * n, g: g, y: yp.baseAddress! + lo * 2 * n, rstd: rp.baseAddress! + lo,
                                                  rows: m, d: 2 * n, eps: 1e-5)
                            }
                        }
                        act.withUnsafeMutableBufferPointer { ap in
                            SwiGLUOp.forward(gate: xb + lo * 2 * n, up: xb + lo * 2 * n + n, ldIn: 2 * n, act: ap.baseAddress! + lo * n,
                                             ldAct: n, rows: m, n: n)
                        }
                        dact.withUnsafeBufferPointer { dp in
                            dgu.withUnsafeMutableBufferPointer { op in
                                SwiGLUOp.backward(dact: dp.baseAddress! + lo * n, ldAct: n, gate: xb + lo * 2 * n, up: xb + lo * 2 * n + n,
                                                  ldIn: 2 * n, dgate: op.baseAddress! + lo * 2 * n, dup: op.baseAddress! + lo * 2 * n + n,
                                                  rows: m, n: n)
                            }
                        }
                        tables.withUnsafeBufferPointer { tp in
                            rot.withUnsafeMutableBufferPointer {
                                RoPEOp.forward(rope, $0.baseAddress! + lo * heads * hd, ld: heads * hd, heads: heads,
                                               tables: tp.baseAddress! + lo * hd, rows: m)
                            }
                            back.withUnsafeMutableBufferPointer {
                                RoPEOp.backward(rope, $0.baseAddress! + lo * heads * hd, ld: heads * hd, heads: heads,
                                                tables: tp.baseAddress! + lo * hd, rows: m)
                            }
                        }
                    }
                }
                return [y, rstd, act, dgu, rot, back].map(Self.bits)
            }
        }
        let base = run(threads: 1, cut: nil)
        for (threads, cut) in [(2, nil), (1, 13), (2, 30)] as [(Int, Int?)] {
            let other = run(threads: threads, cut: cut)
            for k in base.indices { #expect(other[k] == base[k], "output \(k), threads \(threads) cut \(String(describing: cut))") }
        }
    }

    // MARK: Composed chain

    /// x → RMSNorm(g) → h [T × 2n] (gate | up) → act = silu(gate)·up [T × n] as logits →
    /// cross-entropy (one masked row, scale 1/N): the chained backward kernels give dx and
    /// dg within 5e-5 of finite differences of the float64 composition.
    @Test func composedChainMatchesFiniteDifferences() throws {
        var rng = SplitMix64(state: 0x5EED_000A)
        let rows = 5, n = 37, d = 2 * n
        let eps: Float = 1e-5
        let x = Self.random(rows * d, -2, 2, &rng), g = Self.random(d, 0.5, 1.5, &rng)
        let targets: [Int32] = [4, -1, 36, 0, 17]
        let stepTargets = 4
        // Forward.
        var h = [Float](repeating: 0, count: rows * d), rstd = [Float](repeating: 0, count: rows)
        RMSNormOp.forward(x: x, g: g, y: &h, rstd: &rstd, rows: rows, d: d, eps: eps)
        var act = [Float](repeating: 0, count: rows * n)
        h.withUnsafeBufferPointer { b in
            SwiGLUOp.forward(gate: b.baseAddress!, up: b.baseAddress! + n, ldIn: d, act: &act, ldAct: n, rows: rows, n: n)
        }
        let totals = try CrossEntropyOp.forward(logits: act, targets: targets, rows: rows, vocab: n)
        // Backward.
        var dact = [Float](repeating: .nan, count: rows * n)
        try CrossEntropyOp.backward(logits: act, targets: targets, dlogits: &dact, rows: rows, vocab: n, scale: 1 / Float(stepTargets))
        var dh = [Float](repeating: .nan, count: rows * d)
        h.withUnsafeBufferPointer { b in
            dh.withUnsafeMutableBufferPointer { o in
                SwiGLUOp.backward(dact: dact, ldAct: n, gate: b.baseAddress!, up: b.baseAddress! + n, ldIn: d,
                                  dgate: o.baseAddress!, dup: o.baseAddress! + n, rows: rows, n: n)
            }
        }
        var dx = [Float](repeating: .nan, count: rows * d), dg = [Float](repeating: 0, count: d)
        RMSNormOp.backward(dy: dh, x: x, g: g, rstd: rstd, dx: &dx, dg: &dg, rows: rows, d: d)
        // float64 composition.
        func loss(_ x: [Double], _ g: [Double]) -> Double {
            let h = Self.rmsNormRef(x, g, rows: rows, d: d, eps: Double(eps))
            let a = (0..<rows * n).map { k in let t = k / n, j = k % n; return Self.silu(h[t * d + j]) * h[t * d + n + j] }
            return Self.crossEntropyRef(a, targets, vocab: n) / Double(stepTargets)
        }
        let xd = x.map(Double.init), gd = g.map(Double.init)
        #expect(abs(totals.lossSum / Double(stepTargets) - loss(xd, gd)) <= 1e-6 * loss(xd, gd))
        let ex = Self.relError(dx, Self.fd(xd) { loss($0, gd) }), eg = Self.relError(dg, Self.fd(gd) { loss(xd, $0) })
        #expect(ex <= 5e-5, "dx \(ex)")
        #expect(eg <= 5e-5, "dg \(eg)")
    }
}
