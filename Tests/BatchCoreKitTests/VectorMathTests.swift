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

    /// RoPE (adjacent pairs) vs float64 rotation: <= 1e-5 absolute for |x| <= 1 at positions up to 8191.
    @Test func ropeMatchesFloat64() {
        let hd = 64, heads = 3
        let rope = RotaryEmbedding(headDim: hd, base: 10000)
        for pos in [0, 1, 17, 511, 8191] {
            let x = Self.random(hd * heads, -1...1)
            var y = x
            y.withUnsafeMutableBufferPointer { rope.apply($0.baseAddress!, heads: heads, position: pos) }
            for h in 0..<heads {
                for i in 0..<hd / 2 {
                    let theta = Double(pos) * Foundation.pow(10000.0, -2 * Double(i) / Double(hd))
                    let a = Double(x[h * hd + 2 * i]), b = Double(x[h * hd + 2 * i + 1])
                    #expect(abs(Double(y[h * hd + 2 * i]) - (a * cos(theta) - b * sin(theta))) <= 1e-5)
                    #expect(abs(Double(y[h * hd + 2 * i + 1]) - (a * sin(theta) + b * cos(theta))) <= 1e-5)
                }
            }
        }
    }
}
