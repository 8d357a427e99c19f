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
    /// weight gets no gradient here. Deterministic (`ProjectionBackward`'s fixed orders).
    /// Adapters without gradients (`LoRASlot.makeTrainable`) still pass dX through.
    package func adapterBackward(x: UnsafePointer<Float>, ldx: Int, dY: UnsafePointer<Float>, ldDY: Int,
                                 dX: UnsafeMutablePointer<Float>?, ldDX: Int, tokens: Int) throws {
        guard !trainingAdapters.isEmpty, tokens > 0 else { return }
        let scratch = try AdapterScratch(self, tokens: tokens)
        let u = scratch.u, g = scratch.g
        for t in trainingAdapters {
            let s = t.slot, r = s.rank, scale = s.scale, dYa = dY + t.firstRow
            if scratch.bf16 {
                try bf16AdapterBackward(t, x: x, ldx: ldx, dYa: dYa, ldDY: ldDY, dX: dX, ldDX: ldDX, tokens: tokens, scratch)
                continue
            }
            ProjectionBackward.inputGradient(dYa, ldDY: ldDY, tokens: tokens, weight: s.b, rows: s.rows, cols: r, g, ldDX: r)
            for i in 0..<(tokens * r) { g[i] *= scale }
            // The adapter's input: x, or with dropout in this pass xd = m ⊙ x / (1 − p) (recomputed).
            var xin = x, ldin = ldx
            if let mask = t.pass, let xd = scratch.xd {
                mask.forward(x, ldx: ldx, xd, ldy: cols, rows: tokens, cols: cols)
                xin = UnsafePointer(xd)
                ldin = cols
            }
            if let gradA = s.gradA, let gradB = s.gradB {
                ProjectionBackward.weightGradient(g, ldDY: r, xin, ldX: ldin, tokens: tokens, rows: r, cols: cols, gradA)
                scratch.latents(xin, ldx: ldin, s, tokens: tokens)
                for i in 0..<(tokens * r) { u[i] *= scale }
                ProjectionBackward.weightGradient(dYa, ldDY: ldDY, u, ldX: r, tokens: tokens, rows: s.rows, cols: r, gradB)
            }
            guard let dX else { continue }
            if let mask = t.pass, let xd = scratch.xd {
                ProjectionBackward.inputGradient(g, ldDY: r, tokens: tokens, weight: s.a, rows: r, cols: cols, xd, ldDX: cols)
                mask.backward(xd, ldDY: cols, dX, ldDX: ldDX, rows: tokens, cols: cols, accumulate: true)
            } else {
                ProjectionBackward.inputGradient(g, ldDY: r, tokens: tokens, weight: s.a, rows: r, cols: cols, dX, ldDX: ldDX,
                                                 accumulate: true)
            }
        }
    }

    /// `adapterBackward` for one adapter in bf16 compute: the same five products, each a
    /// `BF16GEMM.product` (bf16 operands, float32 sums).
    private func bf16AdapterBackward(_ t: TrainingAdapter, x: UnsafePointer<Float>, ldx: Int, dYa: UnsafePointer<Float>,
                                     ldDY: Int, dX: UnsafeMutablePointer<Float>?, ldDX: Int, tokens: Int,
                                     _ scratch: AdapterScratch) throws {
        let s = t.slot, r = s.rank, scale = s.scale, u = scratch.u, g = scratch.g
        // g = s · dY_a · B
        BF16GEMM.product(.rows(dYa, ld: ldDY), .steps(s.b, ld: r), m: tokens, n: r, steps: s.rows, g, ldc: r, accumulate: false)
        for i in 0..<(tokens * r) { g[i] *= scale }
        var xin = x, ldin = ldx
        if let mask = t.pass, let xd = scratch.xd {
            mask.forward(x, ldx: ldx, xd, ldy: cols, rows: tokens, cols: cols)
            xin = UnsafePointer(xd)
            ldin = cols
        }
        if let gradA = s.gradA, let gradB = s.gradB {
            // dA += gᵀ · x;  dB += dY_aᵀ · (s · u)
            BF16GEMM.product(.steps(g, ld: r), .steps(xin, ld: ldin), m: r, n: cols, steps: tokens, gradA, ldc: cols,
                             accumulate: true)
            scratch.latents(xin, ldx: ldin, s, tokens: tokens)
            for i in 0..<(tokens * r) { u[i] *= scale }
            BF16GEMM.product(.steps(dYa, ld: ldDY), .steps(u, ld: r), m: s.rows, n: r, steps: tokens, gradB, ldc: r,
                             accumulate: true)
        }
        guard let dX else { return }
        // dX += g · A (through the dropout's backward when it dropped)
        if let mask = t.pass, let xd = scratch.xd {
            BF16GEMM.product(.rows(g, ld: r), .steps(s.a, ld: cols), m: tokens, n: cols, steps: r, xd, ldc: cols,
                             accumulate: false)
            mask.backward(xd, ldDY: cols, dX, ldDX: ldDX, rows: tokens, cols: cols, accumulate: true)
        } else {
            BF16GEMM.product(.rows(g, ld: r), .steps(s.a, ld: cols), m: tokens, n: cols, steps: r, dX, ldc: ldDX,
                             accumulate: true)
        }
    }
}
