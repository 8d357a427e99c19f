import BCCore

/// RMSNorm over rows: the forward/backward pair of the training pass. The forward is
/// `VectorMath.rmsNorm` (the inference kernel, same bits); it also saves each row's scale.
///
/// Buffers (row-major, rows contiguous, d floats each):
///
///     x    [T × d]   input rows
///     g    [d]       gain
///     y    [T × d]   y[t, j] = x[t, j] · r[t] · g[j]
///     rstd [T]       r[t] = 1 / sqrt(mean_j x[t, j]² + eps), saved by forward
///     dy   [T × d]   dL/dy
///     dx   [T × d]   dL/dx, WRITTEN:
///                    dx[t, j] = r·g[j]·dy[t, j] − r³/d · x[t, j] · Σ_k dy[t, k]·g[k]·x[t, k]
///     dg   [d]       dL/dg, ACCUMULATED (+=): dg[j] += dy[t, j]·x[t, j]·r[t], rows in order
///
/// Deterministic: dx rows are independent; dg is split by columns across threads and each
/// column adds its rows in row order, so the bits do not depend on the thread count, and
/// calling backward on rows 0..<k then k..<T gives the bits of one call on 0..<T.
package enum RMSNormOp {
    /// y and rstd from x and g; rows run in parallel.
    package static func forward(x: UnsafePointer<Float>, g: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>,
                                rstd: UnsafeMutablePointer<Float>, rows: Int, d: Int, eps: Float) {
        forEachRowBlock(rows, block: 8) { range in
            for t in range { rstd[t] = VectorMath.rmsNorm(x + t * d, g, y + t * d, d, eps: eps) }
        }
    }

    /// dx (written) and dg (accumulated) from dy, x, g and forward's rstd. dx may be the
    /// same buffer as dy (in place); no other overlap.
    package static func backward(dy: UnsafePointer<Float>, x: UnsafePointer<Float>, g: UnsafePointer<Float>,
                                 rstd: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, dg: UnsafeMutablePointer<Float>,
                                 rows: Int, d: Int) {
        if rows <= 0 || d <= 0 { return }
        // dg first (dx may overwrite dy): 64-column blocks, rows in order within a column.
        let columnBlock = 64
        Parallel.forEach((d + columnBlock - 1) / columnBlock) { b in
            let start = b * columnBlock, end = min(d, start + columnBlock)
            forEachBlock16(end - start) { i, lanes in
                let j = start + i
                var acc = load16(dg, j, lanes)
                for t in 0..<rows {
                    acc = fma16(load16(dy + t * d, j, lanes) * load16(x + t * d, j, lanes), Vec16(repeating: rstd[t]), acc)
                }
                store16(acc, dg, j, lanes)
            }
        }
        forEachRowBlock(rows, block: 8) { range in
            for t in range {
                let xr = x + t * d, dyr = dy + t * d, dxr = dx + t * d
                let r = rstd[t]
                // Σ dy·g·x in double.
                var acc0 = SIMD8<Double>(repeating: 0), acc1 = SIMD8<Double>(repeating: 0)
                forEachBlock16(d) { i, lanes in
                    let p = load16(dyr, i, lanes) * load16(g, i, lanes), v = load16(xr, i, lanes)
                    acc0 = acc0.addingProduct(SIMD8<Double>(p.lowHalf), SIMD8<Double>(v.lowHalf))
                    acc1 = acc1.addingProduct(SIMD8<Double>(p.highHalf), SIMD8<Double>(v.highHalf))
                }
                let rd = Double(r)
                let c = Vec16(repeating: -Float(rd * rd * rd / Double(d) * (acc0 + acc1).sum()))
                forEachBlock16(d) { i, lanes in
                    let a = load16(dyr, i, lanes) * load16(g, i, lanes) * r
                    store16(fma16(c, load16(xr, i, lanes), a), dxr, i, lanes)
                }
            }
        }
    }
}
