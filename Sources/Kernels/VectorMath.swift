#if canImport(Glibc)
import Glibc
#endif

/// Vectorized exp for float32: the arithmetic of ggml's CPU `ggml_v_expf` (its AVX-512
/// build, which llama.cpp runs on this machine class), step for step, so that softmax and
/// SiLU round as llama.cpp's do (issue #15: greedy continuations identical to llama.cpp's):
///
///     n = round(x·log2 e)            (z = fma(x, log2 e, 1.5·2²³), n = z − 1.5·2²³)
///     b = x − n·c₁ − n·c₂            (two fused steps; c₁ + c₂ ≈ ln 2)
///     j = ((p₅·b + p₄)·b² + (p₃·b + p₂))·b² + (p₁·b + 1)   (each bracket one fma)
///     exp(x) = j · 2ⁿ                 (one rounding, as vscalefps: j·2^⌊n/2⌋ is exact,
///                                      the second factor rounds once, subnormals included)
///
/// Within 2.5 ulp of exp (2.23 ulp measured at x ≈ −4.55; the exp16 before this one,
/// llama.cpp-agnostic, was within 2 ulp — the price of llama.cpp's bits is a quarter ulp);
/// |n| > 192 gives +inf above and 0 below; NaN stays NaN. Tested against float64.
@inline(__always)
package func exp16(_ x: Vec16) -> Vec16 {
    let shift = Vec16(repeating: 0x1.8p23)
    let z = fma16(x, Vec16(repeating: 0x1.715476p+0), shift)
    let n = z - shift
    let b = fma16(-n, Vec16(repeating: 0x1.7f7d1cp-20), fma16(-n, Vec16(repeating: 0x1.62e4p-1), x))
    let u = b * b
    let j = fma16(fma16(fma16(Vec16(repeating: 0x1.0e4020p-7), b, Vec16(repeating: 0x1.573e2ep-5)), u,
                        fma16(Vec16(repeating: 0x1.555e66p-3), b, Vec16(repeating: 0x1.fffdb6p-2))),
                  u, fma16(Vec16(repeating: 0x1.ffffecp-1), b, Vec16(repeating: 1)))
    // n as an integer: the low mantissa bits of z (|n| < 2²²); 2ⁿ as two normal factors.
    let ni = unsafeBitCast(z, to: SIMD16<Int32>.self) &- unsafeBitCast(shift, to: SIMD16<Int32>.self)
    let n1 = ni &>> 1, n2 = ni &- n1
    let s1 = unsafeBitCast((n1 &+ 127) &<< 23, to: Vec16.self)
    let s2 = unsafeBitCast((n2 &+ 127) &<< 23, to: Vec16.self)
    let result = j * s1 * s2
    let big = abs16(n) .> Vec16(repeating: 192)
    if !any(big) { return result }
    let alt = Vec16(repeating: .infinity).replacing(with: 0, where: n .<= Vec16(repeating: 0))
    return result.replacing(with: alt, where: big)
}

/// |v| lane-wise (the sign bit cleared).
@inline(__always)
func abs16(_ v: Vec16) -> Vec16 {
    unsafeBitCast(unsafeBitCast(v, to: SIMD16<UInt32>.self) & SIMD16<UInt32>(repeating: 0x7fff_ffff), to: Vec16.self)
}

/// Sum of 16 lanes in the order of a 512-bit register's halving reduction (GCC's
/// `_mm512_reduce_add_ps`, which ggml's softmax and f32 dot products use): lanes i and
/// i + 8, then i and i + 4, then i and i + 2, then 0 and 1.
@inline(__always)
package func treeSum16(_ v: Vec16) -> Float {
    let a = v.lowHalf + v.highHalf, b = a.lowHalf + a.highHalf, c = b.lowHalf + b.highHalf
    return c[0] + c[1]
}

/// Elementwise kernels of the transformer, over raw float32 buffers.
package enum VectorMath {
    /// y = x / sqrt(mean(x²) + eps) * weight (RMSNorm), one row of length n. Returns the
    /// row's scale 1 / sqrt(mean(x²) + eps) (what `RMSNormOp` saves for the backward pass).
    ///
    /// The arithmetic of ggml's `rms_norm` followed by its `mul` by the weight (llama.cpp):
    /// each x² rounded to float, the squares summed in double, mean = Float(sum / n),
    /// scale = 1 / sqrtf(mean + eps) in float, y = (x · scale) · weight, two roundings.
    /// ggml sums the squares one after another; here eight double lanes do (their sum
    /// differs from the sequential one by a few double ulps, far below the float rounding
    /// of the mean: the float results agree except on a row in ~10⁸, tested).
    @inline(__always) @discardableResult
    package static func rmsNorm(_ x: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                               _ n: Int, eps: Float) -> Float {
        var acc0 = SIMD8<Double>(repeating: 0), acc1 = acc0
        var i = 0
        while i + 16 <= n {
            let v = load16(x, i, 16), sq = v * v
            acc0 += SIMD8<Double>(sq.lowHalf)
            acc1 += SIMD8<Double>(sq.highHalf)
            i += 16
        }
        var sum = (acc0 + acc1).sum()
        while i < n { sum += Double(x[i] * x[i]); i += 1 }
        let mean = Float(sum / Double(n))
        let scale = 1 / (mean + eps).squareRoot()
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
    ///
    /// The arithmetic of ggml's `soft_max` (llama.cpp's attention without flash attention,
    /// its rows padded with masked zeros to a multiple of 16): e = exp16(x − max) per
    /// block of 16 from index 0; each block's 16 values summed by `treeSum16` (a partial
    /// last block as if padded with zeros), the block sums added in double in order;
    /// p = e · Float(1 / sum).
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
        var sum = 0.0
        var i = 0
        while i < n {
            let lanes = min(16, n - i)
            var e = exp16(load16(row, i, lanes) - m)
            if lanes < 16 { for k in lanes..<16 { e[k] = 0 } }
            store16(e, row, i, lanes)
            sum += Double(treeSum16(e))
            i += lanes
        }
        let inv = Float(1 / sum)
        i = 0
        while i < n {
            let lanes = min(16, n - i)
            store16(load16(row, i, lanes) * inv, row, i, lanes)
            i += lanes
        }
        return (m, Float(sum))
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
///
/// The arithmetic of ggml's CPU `rope` (what llama.cpp runs on GGUF models, issue #15):
/// the angles in float, iteratively — angle₀ = Float(pos), angle_{i+1} = angle_i · r with
/// r = powf(base, −2/d) — then cosf/sinf of each; a pair (a, b) rotates as
/// (fma(a, cos, −(b·sin)), fma(a, sin, b·cos)): b's products rounded, a's fused (ggml's
/// rotation as GCC vectorizes and contracts it; GgmlOpsBitTests). The iterated angle carries at most i roundings of
/// 2⁻²⁴ relative (|error| ≤ pos·θ_i·(i + 1)·2⁻²⁴, tested): the angles llama.cpp uses,
/// rather than the correctly rounded ones.
package struct RotaryEmbedding {
    package let headDim: Int
    package let base: Float
    /// powf(base, −2 / headDim): the ratio of consecutive angles.
    let ratio: Float

    package init(headDim: Int, base: Float) {
        self.headDim = headDim
        self.base = base
        ratio = powf(base, -2 / Float(headDim))
    }

    /// cos/sin of every rotation angle at `position`: headDim floats, cos first.
    package func table(position: Int, into out: UnsafeMutablePointer<Float>) {
        let half = headDim / 2
        var angle = Float(position)
        for i in 0..<half {
            out[i] = cosf(angle)
            out[half + i] = sinf(angle)
            angle *= ratio
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
                v[2 * i] = (-(b * s[i])).addingProduct(a, c[i])
                v[2 * i + 1] = (b * c[i]).addingProduct(a, s[i])
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
