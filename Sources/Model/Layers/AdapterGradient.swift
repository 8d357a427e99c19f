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
}
