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
        let rMax = trainingAdapters.map(\.slot.rank).max() ?? 1
        let u = try Memory.allocateFloats(tokens * rMax, fill: 0)
        defer { free(u) }
        let g = try Memory.allocateFloats(tokens * rMax, fill: 0)
        defer { free(g) }
        let xdCount = dropoutScratchCount(tokens: tokens)
        let xd = xdCount > 0 ? try Memory.allocateFloats(xdCount, fill: 0) : nil
        defer { free(xd) }
        for t in trainingAdapters {
            let s = t.slot, r = s.rank, scale = s.scale, dYa = dY + t.firstRow
            ProjectionBackward.inputGradient(dYa, ldDY: ldDY, tokens: tokens, weight: s.b, rows: s.rows, cols: r, g, ldDX: r)
            for i in 0..<(tokens * r) { g[i] *= scale }
            if let mask = t.pass, let xd {
                if let gradA = s.gradA, let gradB = s.gradB {
                    mask.forward(x, ldx: ldx, xd, ldy: cols, rows: tokens, cols: cols)
                    ProjectionBackward.weightGradient(g, ldDY: r, xd, ldX: cols, tokens: tokens, rows: r, cols: cols, gradA)
                    Self.latents(xd, ldx: cols, s, tokens: tokens, u)
                    for i in 0..<(tokens * r) { u[i] *= scale }
                    ProjectionBackward.weightGradient(dYa, ldDY: ldDY, u, ldX: r, tokens: tokens, rows: s.rows, cols: r, gradB)
                }
                if let dX {
                    ProjectionBackward.inputGradient(g, ldDY: r, tokens: tokens, weight: s.a, rows: r, cols: cols, xd, ldDX: cols)
                    mask.backward(xd, ldDY: cols, dX, ldDX: ldDX, rows: tokens, cols: cols, accumulate: true)
                }
                continue
            }
            if let gradA = s.gradA, let gradB = s.gradB {
                ProjectionBackward.weightGradient(g, ldDY: r, x, ldX: ldx, tokens: tokens, rows: r, cols: cols, gradA)
                Self.latents(x, ldx: ldx, s, tokens: tokens, u)
                for i in 0..<(tokens * r) { u[i] *= scale }
                ProjectionBackward.weightGradient(dYa, ldDY: ldDY, u, ldX: r, tokens: tokens, rows: s.rows, cols: r, gradB)
            }
            if let dX {
                ProjectionBackward.inputGradient(g, ldDY: r, tokens: tokens, weight: s.a, rows: r, cols: cols, dX, ldDX: ldDX,
                                                 accumulate: true)
            }
        }
    }
}
