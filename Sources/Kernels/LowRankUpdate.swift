/// The low-rank half of a LoRA-adapted projection for one row (S-LoRA / Punica SGMV
/// style serving applies it per adapter segment after ONE base product over all rows):
///
///     u[r]        = s · A[r × cols] · x[cols]            (latents, scaled)
///     y[0..<rows] += Bᵀ[r × rows]ᵀ · u                   (y[o] += Σ_j u[j]·Bᵀ[j][o])
///
/// Buffers: A row-major [rank × cols]; Bᵀ row-major [rank × rows] (B transposed, so the
/// second product is one 16-lane axpy per latent); x [cols]; y [rows]; `u` scratch of
/// `rank` floats.
///
/// Batch invariant by construction: a row's update reads only that row and the
/// adapter, and every value is one fixed-order sum (u[j]: a 16-lane FMA chain over
/// cols then the lanes summed in order; y[o]: an FMA chain over j ascending, then one
/// addition into y), so a row gives the same bits alone, in any segment or on any thread.
package enum LowRankUpdate {
    /// One row: y += Bᵀᵀ · (s · A · x). See the type's comment for the buffers.
    @inline(__always)
    package static func row(x: UnsafePointer<Float>, a: UnsafePointer<Float>, bT: UnsafePointer<Float>, rank: Int,
                            cols: Int, rows: Int, scale: Float, y: UnsafeMutablePointer<Float>, u: UnsafeMutablePointer<Float>) {
        // Four latents at a time (four independent FMA chains sharing each x load); each
        // latent's chain is the same whichever group it falls in.
        @inline(__always) func finish(_ acc: Vec16) -> Float {
            var s: Float = 0
            for k in 0..<16 { s += acc[k] }
            return scale * s
        }
        var j = 0
        while j + 4 <= rank {
            let a0 = a + j * cols, a1 = a0 + cols, a2 = a1 + cols, a3 = a2 + cols
            var c0 = Vec16(repeating: 0), c1 = c0, c2 = c0, c3 = c0
            forEachBlock16(cols) { i, lanes in
                let xv = load16(x, i, lanes)
                c0 = fma16(load16(a0, i, lanes), xv, c0)
                c1 = fma16(load16(a1, i, lanes), xv, c1)
                c2 = fma16(load16(a2, i, lanes), xv, c2)
                c3 = fma16(load16(a3, i, lanes), xv, c3)
            }
            u[j] = finish(c0)
            u[j + 1] = finish(c1)
            u[j + 2] = finish(c2)
            u[j + 3] = finish(c3)
            j += 4
        }
        while j < rank {
            let aj = a + j * cols
            var acc = Vec16(repeating: 0)
            forEachBlock16(cols) { i, lanes in acc = fma16(load16(aj, i, lanes), load16(x, i, lanes), acc) }
            u[j] = finish(acc)
            j += 1
        }
        forEachBlock16(rows) { o, lanes in
            var acc = Vec16(repeating: 0)
            for j in 0..<rank { acc = fma16(u[j], load16(bT + j * rows, o, lanes), acc) }
            store16(load16(y, o, lanes) + acc, y, o, lanes)
        }
    }
}
