import BCCore

/// Backward of the projection y[T × rows] = x[T × cols] · Wᵀ (forward: `PackedGEMM.multiply`
/// over `PackedWeights`, i.e. `Linear.forward`), over a whole micro-batch as two matrix
/// products:
///
///     dX[T × cols]    (=|+=) dY[T × rows] · W[rows × cols]       (`inputGradient`)
///     dW[rows × cols]  +=    dY[T × rows]ᵀ · X[T × cols]         (`weightGradient`)
///
/// W is row-major float32 (`Linear.weight`, the trainable copy).
///
/// Determinism: every output value is ONE fused multiply-add chain over the reduction
/// index in ascending order (o for dX, t for dW), starting from 0 (dX) or from the value
/// already in the output (dX with `accumulate`, dW). Blocking only stores the chain's
/// running value to the output and reloads it, which is exact; each output tile belongs
/// to one work item. The result is therefore the same bits whatever the thread count
/// and the tiling.
///
/// Kernel: a 6 × 16 register tile (twelve 8-lane accumulators, as PackedGEMM's), six
/// broadcast values of the left operand and one 16-float piece of the right operand per
/// step; the right operand's 16 columns of a reduction block are first copied to an
/// aligned contiguous panel (reused by the item's 8 row tiles). Work items are tiles of
/// the output (dX: 48 tokens × 128 columns; dW: 48 rows of W × 128 columns) spread with
/// `Parallel.forEach`; the reduction runs in blocks of 256 so that a tile's operands stay
/// in L1/L2. Measured (2 threads, T = 1024, 576 × 576 and 576 × 1536, a shared machine):
/// about 0.45–0.75 of OpenBLAS sgemm's speed on the same products.
/// dX from `PackedWeights` (no row-major copy) measures about 10–15% slower.
package enum ProjectionBackward {
    /// Output rows (tokens for dX, rows of W for dW) per work item: 8 register tiles.
    static let rowsPerItem = 48
    /// Output columns per work item: 8 register tiles.
    static let colsPerItem = 128
    /// Reduction steps per block.
    static let stepsPerBlock = 256

    /// dX[t][k] = Σ_o dY[t][o] · W[o][k] for t < tokens, k < cols (o < rows), ascending o.
    ///
    /// - dY: tokens × rows, row stride `ldDY` ≥ rows.
    /// - w:  rows × cols, row-major (stride cols).
    /// - dX: tokens × cols, row stride `ldDX` ≥ cols; overwritten, or added to when
    ///   `accumulate` (the chain then starts from the value in dX).
    package static func inputGradient(_ dY: UnsafePointer<Float>, ldDY: Int, tokens: Int,
                                      weight w: UnsafePointer<Float>, rows: Int, cols: Int,
                                      _ dX: UnsafeMutablePointer<Float>, ldDX: Int, accumulate: Bool = false) {
        if tokens <= 0 || cols <= 0 { return }
        if rows <= 0 {
            if !accumulate { for t in 0..<tokens { (dX + t * ldDX).update(repeating: 0, count: cols) } }
            return
        }
        // C = dX (row i = token), A = dY (i step ldDY, reduction step 1), B = W (row o).
        multiplyAccumulate(a: dY, aRow: ldDY, aStep: 1, b: w, bStep: cols, steps: rows,
                           c: dX, ldc: ldDX, m: tokens, n: cols, startFromC: accumulate)
    }

    /// `inputGradient` with W read from its packed form (`PackedWeights`, e.g. a frozen
    /// `Linear`'s only copy) instead of a row-major copy: the same values in the same
    /// order, so the same bits. W's 16 × 16 blocks are transposed into the kernel's panel
    /// as it goes; nothing of W's size is allocated.
    package static func inputGradient(_ dY: UnsafePointer<Float>, ldDY: Int, tokens: Int, packed w: PackedWeights,
                                      _ dX: UnsafeMutablePointer<Float>, ldDX: Int, accumulate: Bool = false) {
        let rows = w.rows, cols = w.cols
        if tokens <= 0 || cols <= 0 { return }
        if rows <= 0 {
            if !accumulate { for t in 0..<tokens { (dX + t * ldDX).update(repeating: 0, count: cols) } }
            return
        }
        let data = UnsafePointer(w.data)
        multiplyAccumulate(a: dY, aRow: ldDY, aStep: 1, steps: rows, c: dX, ldc: ldDX, m: tokens, n: cols,
                           startFromC: accumulate) { s0, count, j, lanes, dst in
            // Panel p holds W[16p + q][k] at data[p·cols·16 + k·16 + q].
            if lanes < 16 { dst.update(repeating: 0, count: 16 * count) }
            for s in 0..<count {
                let o = s0 + s
                let src = data + (o >> 4) * cols * 16 + j * 16 + (o & 15)
                let row = dst + 16 * s
                for jj in 0..<lanes { row[jj] = src[jj * 16] }
            }
        }
    }

    /// dW[o][k] += Σ_t dY[t][o] · X[t][k] for o < rows, k < cols (t < tokens), ascending t.
    ///
    /// - dY: tokens × rows, row stride `ldDY` ≥ rows.
    /// - x:  tokens × cols (the forward's input), row stride `ldX` ≥ cols.
    /// - dW: rows × cols, row-major (`Linear.grad`); accumulated into.
    package static func weightGradient(_ dY: UnsafePointer<Float>, ldDY: Int, _ x: UnsafePointer<Float>, ldX: Int,
                                       tokens: Int, rows: Int, cols: Int, _ dW: UnsafeMutablePointer<Float>) {
        if tokens <= 0 || rows <= 0 || cols <= 0 { return }
        // C = dW (row i = o), A = dYᵀ (i step 1, reduction step ldDY), B = X (row t).
        multiplyAccumulate(a: dY, aRow: 1, aStep: ldDY, b: x, bStep: ldX, steps: tokens,
                           c: dW, ldc: cols, m: rows, n: cols, startFromC: true)
    }

    /// C[i][j] (=|+=) Σ_s A(i, s) · B[s][j] for i < m, j < n, s < steps, with
    /// A(i, s) = a[i·aRow + s·aStep] and B[s][j] = b[s·bStep + j]; one FMA chain per value
    /// in ascending s (see the type's doc).
    static func multiplyAccumulate(a: UnsafePointer<Float>, aRow: Int, aStep: Int,
                                   b: UnsafePointer<Float>, bStep: Int, steps: Int,
                                   c: UnsafeMutablePointer<Float>, ldc: Int, m: Int, n: Int, startFromC: Bool) {
        multiplyAccumulate(a: a, aRow: aRow, aStep: aStep, steps: steps, c: c, ldc: ldc, m: m, n: n,
                           startFromC: startFromC) { s0, count, j, lanes, dst in
            var src = b + s0 * bStep + j
            var dst = dst
            for _ in 0..<count {
                if lanes == 16 {
                    UnsafeMutableRawPointer(dst).storeBytes(of: load16(src, 0, 16), as: Vec16.self)
                } else {
                    for k in 0..<16 { dst[k] = k < lanes ? src[k] : 0 }
                }
                src += bStep
                dst += 16
            }
        }
    }

    /// The same product with B given by `packB(s0, count, j, lanes, panel)`, which writes
    /// B[s0 + s][j + jj] to panel[16·s + jj] for s < count, jj < lanes and 0 for
    /// lanes ≤ jj < 16.
    static func multiplyAccumulate(a: UnsafePointer<Float>, aRow: Int, aStep: Int, steps: Int,
                                   c: UnsafeMutablePointer<Float>, ldc: Int, m: Int, n: Int, startFromC: Bool,
                                   packB: (Int, Int, Int, Int, UnsafeMutablePointer<Float>) -> Void) {
        let rowItems = (m + rowsPerItem - 1) / rowsPerItem
        let colItems = (n + colsPerItem - 1) / colsPerItem
        Parallel.forEach(rowItems * colItems) { item in
            let i0 = (item / colItems) * rowsPerItem, i1 = min(m, i0 + rowsPerItem)
            let j0 = (item % colItems) * colsPerItem, j1 = min(n, j0 + colsPerItem)
            // B's 16 columns of one step block, copied to a contiguous, aligned panel
            // (zero past the last column): the kernel then streams whole cache lines.
            withUnsafeTemporaryAllocation(byteCount: stepsPerBlock * 64, alignment: 64) { raw in
                let panel = raw.baseAddress!.assumingMemoryBound(to: Float.self)
                var s0 = 0
                while s0 < steps {
                    let count = min(stepsPerBlock, steps - s0)
                    let load = startFromC || s0 > 0
                    var j = j0
                    while j < j1 {
                        let lanes = min(16, j1 - j)
                        packB(s0, count, j, lanes, panel)
                        var i = i0
                        while i < i1 {
                            let r = min(6, i1 - i)
                            kernel6x16(a + i * aRow + s0 * aStep, aRow, aStep, r, UnsafePointer(panel), count, lanes,
                                       c + i * ldc + j, ldc, load)
                            i += r
                        }
                        j += 16
                    }
                    s0 += count
                }
            }
        }
    }

    @inline(__always)
    static func load8(_ p: UnsafePointer<Float>) -> Vec8 { UnsafeRawPointer(p).loadUnaligned(as: Vec8.self) }

    @inline(__always)
    static func load16Partial(_ p: UnsafePointer<Float>, _ lanes: Int) -> (Vec8, Vec8) {
        if lanes == 16 { return (load8(p), load8(p + 8)) }
        var v = Vec16(repeating: 0)
        for k in 0..<lanes { v[k] = p[k] }
        return (v.lowHalf, v.highHalf)
    }

    @inline(__always)
    static func store16Partial(_ lo: Vec8, _ hi: Vec8, _ p: UnsafeMutablePointer<Float>, _ lanes: Int) {
        if lanes == 16 {
            UnsafeMutableRawPointer(p).storeBytes(of: lo, as: Vec8.self)
            UnsafeMutableRawPointer(p + 8).storeBytes(of: hi, as: Vec8.self)
            return
        }
        for k in 0..<lanes { p[k] = k < 8 ? lo[k] : hi[k - 8] }
    }

    /// Up to 6 rows (i) × up to 16 columns (j) of C over `steps` reduction steps; B is a
    /// packed panel (16 floats per step). Rows past `r` repeat row 0 (same work, results
    /// dropped); only `lanes` columns are loaded and stored.
    @inline(__always)
    static func kernel6x16(_ a: UnsafePointer<Float>, _ aRow: Int, _ aStep: Int, _ r: Int,
                           _ b: UnsafePointer<Float>, _ steps: Int, _ lanes: Int,
                           _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ load: Bool) {
        let a0 = a, a1 = r > 1 ? a + aRow : a, a2 = r > 2 ? a + 2 * aRow : a
        let a3 = r > 3 ? a + 3 * aRow : a, a4 = r > 4 ? a + 4 * aRow : a, a5 = r > 5 ? a + 5 * aRow : a
        var c00 = Vec8(), c01 = Vec8(), c10 = Vec8(), c11 = Vec8(), c20 = Vec8(), c21 = Vec8()
        var c30 = Vec8(), c31 = Vec8(), c40 = Vec8(), c41 = Vec8(), c50 = Vec8(), c51 = Vec8()
        if load {
            (c00, c01) = load16Partial(c, lanes)
            if r > 1 { (c10, c11) = load16Partial(c + ldc, lanes) }
            if r > 2 { (c20, c21) = load16Partial(c + 2 * ldc, lanes) }
            if r > 3 { (c30, c31) = load16Partial(c + 3 * ldc, lanes) }
            if r > 4 { (c40, c41) = load16Partial(c + 4 * ldc, lanes) }
            if r > 5 { (c50, c51) = load16Partial(c + 5 * ldc, lanes) }
        }
        var bp = b
        var off = 0
        for _ in 0..<steps {
            let b0 = load8(bp), b1 = load8(bp + 8)
            var x = Vec8(repeating: a0[off])
            c00 = c00.addingProduct(x, b0); c01 = c01.addingProduct(x, b1)
            x = Vec8(repeating: a1[off])
            c10 = c10.addingProduct(x, b0); c11 = c11.addingProduct(x, b1)
            x = Vec8(repeating: a2[off])
            c20 = c20.addingProduct(x, b0); c21 = c21.addingProduct(x, b1)
            x = Vec8(repeating: a3[off])
            c30 = c30.addingProduct(x, b0); c31 = c31.addingProduct(x, b1)
            x = Vec8(repeating: a4[off])
            c40 = c40.addingProduct(x, b0); c41 = c41.addingProduct(x, b1)
            x = Vec8(repeating: a5[off])
            c50 = c50.addingProduct(x, b0); c51 = c51.addingProduct(x, b1)
            bp += 16
            off += aStep
        }
        store16Partial(c00, c01, c, lanes)
        if r > 1 { store16Partial(c10, c11, c + ldc, lanes) }
        if r > 2 { store16Partial(c20, c21, c + 2 * ldc, lanes) }
        if r > 3 { store16Partial(c30, c31, c + 3 * ldc, lanes) }
        if r > 4 { store16Partial(c40, c41, c + 4 * ldc, lanes) }
        if r > 5 { store16Partial(c50, c51, c + 5 * ldc, lanes) }
    }
}
