import BCKernels
import Foundation
import Testing

/// Transformer kernels against float64 references on fresh random inputs.
@Suite struct VectorMathTests {
    static func random(_ n: Int, _ range: ClosedRange<Float>) -> [Float] {
        var g = SystemRandomNumberGenerator()
        return (0..<n).map { _ in Float.random(in: range, using: &g) }
    }

    /// Softmax (vectorized exp) vs float64: max relative error per element <= 1e-6.
    /// The reference exponentiates the same float32 differences x - max the kernel sees.
    @Test func softmaxMatchesFloat64() {
        for n in [1, 7, 16, 33, 1000, 4099] {
            var row = Self.random(n, -30...30)
            let m = row.max()!
            let e = row.map { Foundation.exp(Double($0 - m)) }
            let sum = e.reduce(0, +)
            row.withUnsafeMutableBufferPointer { VectorMath.softmax($0.baseAddress!, n) }
            for i in 0..<n {
                let ref = e[i] / sum
                #expect(abs(Double(row[i]) - ref) <= 1e-6 * ref + 1e-30, "n=\(n) i=\(i)")
            }
        }
    }

    /// The (max, sum) softmax returns (the attention merge's statistics): the max exact
    /// wherever it sits (a vector lane, the scalar tail, the first element; all values
    /// negative so a zero-initialised max would be wrong), the sum Σ exp(x − max) within
    /// (n/16 + 8)·2⁻²³ relative of float64: each of the 16 float32 lanes adds ≤ n/16 positive
    /// terms (one rounding each), plus exp16's own error and the final lane sum.
    @Test func softmaxReturnsExactMaxAndSum() {
        var g = SystemRandomNumberGenerator()
        for n in [1, 5, 16, 17, 31, 48, 333, 4099] {
            for spot in [0, n - 1, Int.random(in: 0..<n, using: &g)] {
                var row = Self.random(n, -60 ... -1)
                row[spot] = -0.5 + Float.random(in: 0..<0.25, using: &g)
                let m = row.max()!
                let sum = row.reduce(0.0) { $0 + Foundation.exp(Double($1 - m)) }
                let got = row.withUnsafeMutableBufferPointer { VectorMath.softmax($0.baseAddress!, n) }
                #expect(got.max == m, "n=\(n) max at \(spot): \(got.max) vs \(m)")
                let tol = Double(n / 16 + 8) * 0x1p-23 * sum
                #expect(abs(Double(got.sum) - sum) <= tol, "n=\(n) sum \(got.sum) vs \(sum)")
            }
        }
    }

    /// SwiGLU vs float64 over a wide input range incl. exp overflow/underflow: <= 2e-6 relative.
    @Test func swigluMatchesFloat64() {
        let n = 5003
        let gate = Self.random(n, -100...100) + [0, -0.0, 88, -88, 200, -200]
        let up = Self.random(gate.count, -3...3)
        var out = [Float](repeating: 0, count: gate.count)
        VectorMath.swiglu(gate, up, &out, gate.count)
        for i in gate.indices {
            let g = Double(gate[i])
            let ref = g / (1 + Foundation.exp(-g)) * Double(up[i])
            #expect(abs(Double(out[i]) - ref) <= 2e-6 * abs(ref) + 1e-30, "gate \(gate[i])")
        }
    }

    /// RMSNorm vs float64: <= 1e-6 relative to the row's largest output.
    @Test func rmsNormMatchesFloat64() {
        for n in [5, 576, 1031] {
            let x = Self.random(n, -4...4), w = Self.random(n, 0.5...1.5)
            var y = [Float](repeating: 0, count: n)
            VectorMath.rmsNorm(x, w, &y, n, eps: 1e-5)
            let ms = x.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(n)
            let ref = (0..<n).map { Double(x[$0]) / (ms + 1e-5).squareRoot() * Double(w[$0]) }
            let scale = ref.map(abs).max()!
            for i in 0..<n { #expect(abs(Double(y[i]) - ref[i]) <= 1e-6 * scale) }
        }
    }

    /// RoPE (adjacent pairs) vs float64 at positions up to 8191, |x| <= 1, in two parts.
    /// The angles are llama.cpp's: Float(pos) times r = powf(base, −2/d) i times in float, so
    /// angle_i is within pos·θ_i·(i + 1)·2⁻²² of the exact pos·θ_i (i roundings of 2⁻²⁴
    /// relative, and r's own error of < 1 ulp compounded i times). Given those float angles,
    /// the rotation is exact to 1e-6: cosf/sinf are within an ulp and each output rounds
    /// at most twice (|a| + |b| <= 2).
    @Test func ropeMatchesFloat64() {
        let hd = 64, heads = 3
        let rope = RotaryEmbedding(headDim: hd, base: 10000)
        let r = powf(10000, -2 / Float(hd))
        for pos in [0, 1, 17, 511, 8191] {
            let x = Self.random(hd * heads, -1...1)
            var y = x
            y.withUnsafeMutableBufferPointer { rope.apply($0.baseAddress!, heads: heads, position: pos) }
            var angle = Float(pos)
            for i in 0..<hd / 2 {
                let exact = Double(pos) * Foundation.pow(10000.0, -2 * Double(i) / Double(hd))
                #expect(abs(Double(angle) - exact) <= exact * Double(i + 1) * 0x1p-22, "pos \(pos) i \(i)")
                let theta = Double(angle)
                for h in 0..<heads {
                    let a = Double(x[h * hd + 2 * i]), b = Double(x[h * hd + 2 * i + 1])
                    #expect(abs(Double(y[h * hd + 2 * i]) - (a * cos(theta) - b * sin(theta))) <= 1e-6)
                    #expect(abs(Double(y[h * hd + 2 * i + 1]) - (a * sin(theta) + b * cos(theta))) <= 1e-6)
                }
                angle *= r
            }
        }
    }

    /// RMSNorm's bits are those of ggml's order (llama.cpp's rms_norm then mul), modelled
    /// here in scalar code: each x² rounded to float, summed one by one in double,
    /// mean = Float(sum / n), scale = 1 / sqrtf(mean + eps), y = (x·scale)·w. The kernel
    /// sums in eight double lanes instead; the two double sums differ by a few double
    /// ulps, which changes the float mean in about one row in 10⁸ — none of these 600.
    @Test func rmsNormIsGgmlOrder() {
        var g = SystemRandomNumberGenerator()
        var bad = 0, total = 0
        for n in [5, 16, 576, 577, 1031, 4099] {
            for _ in 0..<100 {
                let s = Float.random(in: 1e-3...30, using: &g)
                let x = Self.random(n, -1...1).map { $0 * s }, w = Self.random(n, 0.2...2)
                var y = [Float](repeating: 0, count: n)
                let scale = VectorMath.rmsNorm(x, w, &y, n, eps: 1e-5)
                var sum = 0.0
                for v in x { sum += Double(v * v) }
                let ref = 1 / (Float(sum / Double(n)) + 1e-5).squareRoot()
                if scale.bitPattern != ref.bitPattern { bad += 1 }
                for i in 0..<n where y[i].bitPattern != (x[i] * ref * w[i]).bitPattern { bad += 1 }
                total += n + 1
            }
        }
        #expect(bad == 0, "\(bad) of \(total) values differ from the ggml-order model")
    }

    /// Softmax's bits are those of ggml's soft_max order, modelled in scalar code: the
    /// exponentials (exp16, elementwise) in blocks of 16 from index 0, each block summed as
    /// a 512-bit halving reduction (lanes i + 8, then i + 4, then i + 2, then 0 + 1; a
    /// partial block padded with zeros), the block sums added in double in order, then
    /// p = e · Float(1 / sum). Odd lengths and tails.
    @Test func softmaxIsGgmlOrder() {
        var bad = 0, total = 0
        for n in [1, 2, 5, 15, 16, 17, 63, 100, 1000, 4099] {
            let x = Self.random(n, -40...10)
            var row = x
            let got = row.withUnsafeMutableBufferPointer { VectorMath.softmax($0.baseAddress!, n) }
            let m = x.max()!
            var e = [Float](repeating: 0, count: (n + 15) / 16 * 16)
            var sum = 0.0
            for b in stride(from: 0, to: n, by: 16) {
                var v = Vec16(repeating: 0)
                for k in 0..<min(16, n - b) { v[k] = x[b + k] - m }
                let ev = exp16(v)
                for k in 0..<16 { e[b + k] = b + k < n ? ev[k] : 0 }
                var l = (0..<16).map { e[b + $0] }
                for half in [8, 4, 2, 1] { for i in 0..<half { l[i] = l[i] + l[i + half] } }
                sum += Double(l[0])
            }
            let inv = Float(1 / sum)
            for i in 0..<n where row[i].bitPattern != (e[i] * inv).bitPattern { bad += 1 }
            if got.sum.bitPattern != Float(sum).bitPattern || got.max != m { bad += 1 }
            total += n + 1
        }
        #expect(bad == 0, "\(bad) of \(total) values differ from the ggml-order model")
    }

    /// exp16 (ggml's expf polynomial) vs float64: within 2.5 ulp where the result is normal
    /// (ggml's comment says 1.45 + 0.5 ulp; a float64 emulation of its steps on 2·10⁷ points
    /// finds 2.23 ulp at x ≈ −4.55, as this kernel does), within one subnormal step (2⁻¹⁴⁹)
    /// plus the polynomial's relative error below that, and its edges: +inf from 88.73,
    /// 0 far below −104, NaN through.
    @Test func expMatchesFloat64() {
        var g = SystemRandomNumberGenerator()
        var worstUlps = 0.0
        for _ in 0..<4000 {
            var v = Vec16(repeating: 0)
            for k in 0..<16 { v[k] = Float.random(in: -104...88.7, using: &g) }
            let e = exp16(v)
            for k in 0..<16 {
                let ref = Foundation.exp(Double(v[k]))
                if ref >= Double(Float.leastNormalMagnitude) {
                    let ulp = Double(Float(ref).ulp)
                    worstUlps = max(worstUlps, abs(Double(e[k]) - ref) / ulp)
                } else {
                    #expect(abs(Double(e[k]) - ref) <= 0x1p-149 + 3e-7 * ref, "exp(\(v[k]))")
                }
            }
        }
        #expect(worstUlps <= 2.5, "worst \(worstUlps) ulp")
        let edges = exp16(Vec16(0, -0.0, 1, -1, 88.73, 89, 200, .infinity, -105, -200, -.infinity, .nan, 88.7, -87.5, -103.9, 0.5))
        #expect(edges[0] == 1 && edges[1] == 1 && abs(Double(edges[2]) - M_E) <= 2 * Double(Float(M_E).ulp))
        #expect(edges[4] == .infinity && edges[5] == .infinity && edges[6] == .infinity && edges[7] == .infinity)
        #expect(edges[8] == 0 && edges[9] == 0 && edges[10] == 0 && edges[11].isNaN)
        #expect(edges[12].isFinite && edges[13] > 0 && edges[14] > 0)
    }
}
