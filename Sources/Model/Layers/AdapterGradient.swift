import BCCore
import BCKernels
#if canImport(Glibc)
import Glibc
#endif

extension Linear {
    /// Backward of `forwardTrainingAdapters` over T = `tokens` rows, for each training
    /// adapter (A [r × cols], B [rows_a × r], s = scale, dY_a = the adapter's columns
    /// first ..< first + rows_a of dY; u = x·Aᵀ is recomputed, bit-identical to the
    /// forward's):
    ///
    ///     g[T × r]        = s · dY_a · B
    ///     dA[r × cols]   += gᵀ · x
    ///     dB[rows_a × r] += dY_aᵀ · (s · u)
    ///     dX[T × cols]   += g · A                 (when dX is given)
    ///
    /// With dropout in this pass (`TrainingAdapter.pass`; mask m, kept values scaled by
    /// 1/(1 − p)), x above is the dropped input xd = m ⊙ x / (1 − p), recomputed from the
    /// same counter-based mask as the forward, and dX gets the dropout's backward:
    ///
    ///     dX[T × cols]   += m ⊙ (g · A) / (1 − p)   (`DropoutOp.backward`)
    ///
    /// Call it after the base `backward` wrote dX (the adapter adds to it). The base
    /// weight gets no gradient here. Deterministic (`ProjectionBackward`'s or `BF16GEMM`'s fixed
    /// orders: `AdapterProducts`).
    /// Adapters without gradients (`LoRASlot.makeTrainable`) still pass dX through.
    package func adapterBackward(x: UnsafePointer<Float>, ldx: Int, dY: UnsafePointer<Float>, ldDY: Int,
                                 dX: UnsafeMutablePointer<Float>?, ldDX: Int, tokens: Int) throws {
        guard !trainingAdapters.isEmpty, tokens > 0 else { return }
        let scratch = try AdapterScratch(self, tokens: tokens)
        let u = scratch.u, g = scratch.g, products = AdapterProducts(bf16: scratch.bf16)
        for t in trainingAdapters {
            let s = t.slot, r = s.rank, scale = s.scale, dYa = dY + t.firstRow
            products.times(dYa, lda: ldDY, tokens: tokens, s.b, k: s.rows, n: r, g, ldo: r, accumulate: false)
            for i in 0..<(tokens * r) { g[i] *= scale }
            // The adapter's input: x, or with dropout in this pass xd = m ⊙ x / (1 − p) (recomputed).
            var xin = x, ldin = ldx
            if let mask = t.pass, let xd = scratch.xd {
                mask.forward(x, ldx: ldx, xd, ldy: cols, rows: tokens, cols: cols)
                xin = UnsafePointer(xd)
                ldin = cols
            }
            if let gradA = s.gradA, let gradB = s.gradB {
                products.transposedTimes(g, lda: r, xin, ldb: ldin, tokens: tokens, k: r, n: cols, gradA)
                scratch.latents(xin, ldx: ldin, s, tokens: tokens)
                for i in 0..<(tokens * r) { u[i] *= scale }
                products.transposedTimes(dYa, lda: ldDY, u, ldb: r, tokens: tokens, k: s.rows, n: r, gradB)
            }
            guard let dX else { continue }
            if let mask = t.pass, let xd = scratch.xd {
                products.times(g, lda: r, tokens: tokens, s.a, k: r, n: cols, xd, ldo: cols, accumulate: false)
                mask.backward(xd, ldDY: cols, dX, ldDX: ldDX, rows: tokens, cols: cols, accumulate: true)
            } else {
                products.times(g, lda: r, tokens: tokens, s.a, k: r, n: cols, dX, ldo: ldDX, accumulate: true)
            }
        }
    }
}

/// The adapter backward's two product shapes in the projection's arithmetic: float32
/// (`ProjectionBackward`) or, in bf16 compute, `BF16GEMM.product`.
struct AdapterProducts {
    let bf16: Bool

    /// out[T × n] (=|+=) a[T × k] · M[k × n] (M row-major, stride n; a and out strides lda, ldo).
    func times(_ a: UnsafePointer<Float>, lda: Int, tokens: Int, _ m: UnsafePointer<Float>, k: Int, n: Int,
               _ out: UnsafeMutablePointer<Float>, ldo: Int, accumulate: Bool) {
        if bf16 {
            BF16GEMM.product(.rows(a, ld: lda), .steps(m, ld: n), m: tokens, n: n, steps: k, out, ldc: ldo, accumulate: accumulate)
        } else {
            ProjectionBackward.inputGradient(a, ldDY: lda, tokens: tokens, weight: m, rows: k, cols: n, out, ldDX: ldo,
                                             accumulate: accumulate)
        }
    }

    /// out[k × n] += a[T × k]ᵀ · b[T × n] (out row-major, stride n).
    func transposedTimes(_ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int, tokens: Int, k: Int, n: Int,
                         _ out: UnsafeMutablePointer<Float>) {
        if bf16 {
            BF16GEMM.product(.steps(a, ld: lda), .steps(b, ld: ldb), m: k, n: n, steps: tokens, out, ldc: n, accumulate: true)
        } else {
            ProjectionBackward.weightGradient(a, ldDY: lda, b, ldX: ldb, tokens: tokens, rows: k, cols: n, out)
        }
    }
}
