#if canImport(Glibc)
import Glibc
#endif

/// Vectorized exp for float32 (Cephes-style range reduction + degree-6 polynomial):
/// exp(x) = 2^n · e^r with n = round(x·log2 e), r = x - n·ln 2 (split in two parts);
/// relative error below 2 ulp over the float range; x < -87.3 gives 0, x > 88.7 gives +inf.
@inline(__always)
func exp16(_ x: Vec16) -> Vec16 {
    let hi = Vec16(repeating: 88.72283), lo = Vec16(repeating: -87.33654)
    let xc = x.replacing(with: hi, where: x .> hi).replacing(with: lo, where: x .< lo)
    // n = round(x·log2 e) with the 1.5·2^23 trick: adding it leaves n in the low
    // mantissa bits (the standard library's SIMD rounding/conversion is per lane).
    let magic = Vec16(repeating: 12582912)
    let shifted = fma16(xc, Vec16(repeating: 1.442695040888963), magic)
    let n = shifted - magic
    var r = fma16(n, Vec16(repeating: -0.693359375), xc)
    r = fma16(n, Vec16(repeating: 2.12194440e-4), r)
    var p = Vec16(repeating: 1.9875691500e-4)
    p = fma16(p, r, Vec16(repeating: 1.3981999507e-3))
    p = fma16(p, r, Vec16(repeating: 8.3334519073e-3))
    p = fma16(p, r, Vec16(repeating: 4.1665795894e-2))
    p = fma16(p, r, Vec16(repeating: 1.6666665459e-1))
    p = fma16(p, r, Vec16(repeating: 5.0000001201e-1))
    p = fma16(p * r, r, r) + 1
    // 2^n through the exponent bits: n is the low bits of `shifted`.
    let ni = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- unsafeBitCast(magic, to: SIMD16<Int32>.self)
    let scale = unsafeBitCast((ni &+ 127) &<< 23, to: Vec16.self)
    var result = p * scale
    result = result.replacing(with: .infinity, where: x .> hi)
    result = result.replacing(with: 0, where: x .< lo)
    return result
}

/// Elementwise kernels of the transformer, over raw float32 buffers.
package enum VectorMath {
    /// y = x / sqrt(mean(x²) + eps) * weight (RMSNorm), one row of length n. Returns the
    /// row's scale 1 / sqrt(mean(x²) + eps) (what `RMSNormOp` saves for the backward pass).
    @inline(__always) @discardableResult
    package static func rmsNorm(_ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                               _ n: Int, eps: Float) -> Float {
        var acc = Vec16(repeating: 0)
        var i = 0
        while i + 16 <= n { let v = load16(x, i, 16); acc = fma16(v, v, acc); i += 16 }
        var sum = acc.sum()
        while i < n { sum += x[i] * x[i]; i += 1 }
        let scale = 1 / (sum / Float(n) + eps).squareRoot()
        i = 0
        while i + 16 <= n { store16(load16(x, i, 16) * scale * load16(weight, i, 16), y, i, 16); i += 16 }
        while i < n { y[i] = x[i] * scale * weight[i]; i += 1 }
        return scale
    }

    /// out = silu(gate) * up = gate / (1 + exp(-gate)) * up, n elements.
    @inline(__always)
    package static func swiglu(_ gate: UnsafePointer<Float>, _ up: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i < n {
            let lanes = min(16, n - i)
            let g = load16(gate, i, lanes)
            store16(g / (exp16(-g) + 1) * load16(up, i, lanes), out, i, lanes)
            i += lanes
        }
    }

    /// In-place softmax of row[0..<n], using the row max for stability; returns that max
    /// and the sum of exp(row - max) (training keeps them: log-sum-exp = max + log(sum)).
    @inline(__always) @discardableResult
    package static func softmax(_ row: UnsafeMutablePointer<Float>, _ n: Int) -> (max: Float, sum: Float) {
        var mv = Vec16(repeating: -.infinity)
        var j = 0
        while j + 16 <= n {
            mv = max16(mv, load16(row, j, 16))
            j += 16
        }
        var m = mv.max()
        while j < n {
            m = max(m, row[j])
            j += 1
        }
        var sumV = Vec16(repeating: 0)
        var i = 0
        while i < n {
            let lanes = min(16, n - i)
            var e = exp16(load16(row, i, lanes) - m)
            if lanes < 16 { for k in lanes..<16 { e[k] = 0 } }
            store16(e, row, i, lanes)
            sumV += e
            i += lanes
        }
        let sum = sumV.sum(), inv = 1 / sum
        i = 0
        while i < n {
            let lanes = min(16, n - i)
            store16(load16(row, i, lanes) * inv, row, i, lanes)
            i += lanes
        }
        return (m, sum)
    }

    /// y += a·x, n elements.
    @inline(__always)
    package static func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i < n {
            let lanes = min(16, n - i)
            store16(fma16(a, load16(x, i, lanes), load16(y, i, lanes)), y, i, lanes)
            i += lanes
        }
    }

    /// y += x, n elements.
    @inline(__always)
    package static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, _ n: Int) {
        var i = 0
        while i < n {
            let lanes = min(16, n - i)
            store16(load16(y, i, lanes) + load16(x, i, lanes), y, i, lanes)
            i += lanes
        }
    }
}

/// Rotary position embedding, "normal" (GPT-J / llama.cpp LLAMA_ROPE_TYPE_NORM)
/// layout: dimensions (2i, 2i+1) of each head rotate by pos·θ_i, θ_i = base^(-2i/d).
/// (llama.cpp's converter permutes Llama's Q/K weights so this layout applies.)
/// Angles, cosines and sines are computed in double and rounded once.
package struct RotaryEmbedding {
    package let headDim: Int
    package let base: Float
    /// θ_i for i in 0..<headDim/2.
    let inverseFrequencies: [Double]

    package init(headDim: Int, base: Float) {
        self.headDim = headDim
        self.base = base
        inverseFrequencies = (0..<headDim / 2).map { i in pow(Double(base), -2 * Double(i) / Double(headDim)) }
    }

    /// cos/sin of every rotation angle at `position`: headDim floats, cos first.
    package func table(position: Int, into out: UnsafeMutablePointer<Float>) {
        let half = headDim / 2
        for i in 0..<half {
            let angle = Double(position) * inverseFrequencies[i]
            out[i] = Float(cos(angle))
            out[half + i] = Float(sin(angle))
        }
    }

    /// Rotates `heads` consecutive heads in place with a table from `table(position:into:)`.
    @inline(__always)
    package func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, table: UnsafePointer<Float>) {
        let half = headDim / 2
        let c = table, s = table + half
        for h in 0..<heads {
            let v = x + h * headDim
            for i in 0..<half {
                let a = v[2 * i], b = v[2 * i + 1]
                v[2 * i] = a * c[i] - b * s[i]
                v[2 * i + 1] = a * s[i] + b * c[i]
            }
        }
    }

    /// Rotates `heads` consecutive heads of one token at `position` in place.
    package func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, position: Int) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: headDim) { t in
            table(position: position, into: t.baseAddress!)
            apply(x, heads: heads, table: t.baseAddress!)
        }
    }
}
