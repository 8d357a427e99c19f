import BCCore
import CSupport

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
/// Kernel: a 6 × 16 register tile (twelve 8-lane accumulators, as PackedGEMM's) streaming
/// two packed buffers: per work item and reduction block of 256, the left operand's rows
/// as micro-panels of 6 (6 floats per step) and, per 16 output columns, the right
/// operand's panel (16 floats per step). Work items are tiles of the output spread with
/// `Parallel.forEach` (see `multiplyAccumulate` for the tiling). Measured single-thread
/// on the SmolLM2-135M shapes (T = 1024; a loaded shared machine, so ratios to the
/// forward `PackedGEMM.multiply` in the same run): about 0.75–0.85 of the forward's
/// GFLOP/s (was about 0.4), OpenBLAS sgemm measures about 0.9–1.0 of the forward's.
/// Hand-run bench: `BATCHCORE_BENCH=1 swift test -c release --skip-build --filter
/// ProjectionBench`; OpenBLAS: bench/sgemm_bench.c.
package enum ProjectionBackward {
    /// Output rows (tokens for dX, rows of W for dW) per work item: 8 micro-panels of 6;
    /// 192 when that still leaves 4 items per thread, 24 when 48 leaves fewer.
    static let rowsPerItem = 48
    /// Widest work item in output columns (32 register tiles): wide items amortise A's
    /// packing (a transpose for dX) over many B panels.
    static let maxColsPerItem = 512
    /// Output rows per work item when there are many output rows (each item packs B
    /// again), and earlier when B's panels are costly to pack (`inputGradient` from
    /// `PackedWeights`, the frozen base of LoRA training): 32 micro-panels of 6.
    static let packedRowsPerItem = 192
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
        // Tall row items (`packedRowsPerItem`): each item transposes its W panels once for
        // all its rows, so fewer, taller items transpose W fewer times.
        multiplyAccumulate(a: dY, aRow: ldDY, aStep: 1, steps: rows, c: dX, ldc: ldDX, m: tokens, n: cols,
                           startFromC: accumulate, tallRows: true) { s0, count, j, lanes, dst in
            // Panel p holds W[16p + q][k] at data[p·cols·16 + k·16 + q].
            if lanes < 16 { dst.update(repeating: 0, count: 16 * count) }
            var s = 0
            while s < count {
                let o = s0 + s
                #if arch(x86_64)
                if lanes == 16 && o & 15 == 0 && s + 16 <= count {
                    // A whole panel's 16 rows × 16 columns: one block transpose.
                    bc_internal_transpose16(data + (o >> 4) * cols * 16 + j * 16, dst + 16 * s)
                    s += 16
                    continue
                }
                #endif
                let src = data + (o >> 4) * cols * 16 + j * 16 + (o & 15)
                let row = dst + 16 * s
                for jj in 0..<lanes { row[jj] = src[jj * 16] }
                s += 1
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
    ///
    /// Per work item and reduction block, A's rows are first copied to micro-panels of 6
    /// rows (apack[g][s][q] = A(i0 + 6g + q, s0 + s), zero past the item's last row) and
    /// B's 16 columns to a panel, so that the micro-kernel streams two contiguous buffers
    /// exactly as `PackedGEMM.kernel6x16` does.
    static func multiplyAccumulate(a: UnsafePointer<Float>, aRow: Int, aStep: Int, steps: Int,
                                   c: UnsafeMutablePointer<Float>, ldc: Int, m: Int, n: Int, startFromC: Bool,
                                   tallRows: Bool = false,
                                   packB: (Int, Int, Int, Int, UnsafeMutablePointer<Float>) -> Void) {
        // Tiling (never changes a value, see the type's doc). Few output rows (≤ 192, e.g.
        // the head's dX over a logit chunk): one row item, so B (there the whole W) streams
        // from memory once; columns in 2 items per thread. Otherwise rows of 192 when there
        // are enough of them (many output rows, e.g. dW of the head or the MLP: each item
        // packs B again, so fewer, taller items pack it less often), else 48, else 24, and
        // columns split evenly into items of at most 512,
        // more of them (down to 64 wide) while there are fewer than 4 items per thread.
        let threads = Parallel.threadCount
        // Items of `packedRowsPerItem` rows while that leaves 4 row items per thread, or
        // 2 with `tallRows` (B packed at a cost, e.g. transposed from PackedWeights).
        let rowsPerItem = m <= 192 ? (m + 5) / 6 * 6
            : (m + Self.packedRowsPerItem - 1) / Self.packedRowsPerItem >= (tallRows ? 2 : 4) * threads ? Self.packedRowsPerItem
            : (m + 47) / 48 >= 4 * threads ? Self.rowsPerItem : Self.rowsPerItem / 2
        let rowItems = (m + rowsPerItem - 1) / rowsPerItem
        let itemsWanted = rowItems == 1 ? 2 * threads : 4 * threads
        var colItems = (n + maxColsPerItem - 1) / maxColsPerItem
        while rowItems * colItems < itemsWanted && (colItems + 1) * 64 <= n { colItems += 1 }
        let colsPerItem = ((n + colItems - 1) / colItems + 15) / 16 * 16
        let groupsPerItem = (rowsPerItem + 5) / 6
        // panel: stepsPerBlock × 16; apack: groups × stepsPerBlock × 6; edge tile: 6 × 16.
        let floats = stepsPerBlock * 16 + groupsPerItem * stepsPerBlock * 6 + 96
        Parallel.forEach(rowItems * colItems) { item in
            let i0 = (item / colItems) * rowsPerItem, i1 = min(m, i0 + rowsPerItem)
            let j0 = (item % colItems) * colsPerItem, j1 = min(n, j0 + colsPerItem)
            let groups = (i1 - i0 + 5) / 6
            withUnsafeTemporaryAllocation(byteCount: floats * 4, alignment: 64) { raw in
                let panel = raw.baseAddress!.assumingMemoryBound(to: Float.self)
                let apack = panel + stepsPerBlock * 16
                let edge = apack + groupsPerItem * stepsPerBlock * 6
                var s0 = 0
                while s0 < steps {
                    let count = min(stepsPerBlock, steps - s0)
                    let load = startFromC || s0 > 0
                    for g in 0..<groups {
                        packA(a, aRow, aStep, m, i0 + 6 * g, min(6, i1 - i0 - 6 * g), s0, count, apack + g * 6 * count)
                    }
                    var j = j0
                    while j < j1 {
                        let lanes = min(16, j1 - j)
                        packB(s0, count, j, lanes, panel)
                        for g in 0..<groups {
                            let i = i0 + 6 * g, r = min(6, i1 - i)
                            let ap = UnsafePointer(apack + g * 6 * count)
                            if r == 6 && lanes == 16 {
                                kernel6x16(ap, UnsafePointer(panel), count, c + i * ldc + j, ldc, load)
                            } else {
                                // Edge tile: through a 6 × 16 copy (rows ≥ r and lanes ≥ `lanes`
                                // compute on zeros and are dropped).
                                edge.update(repeating: 0, count: 96)
                                if load {
                                    for q in 0..<r { (edge + 16 * q).update(from: c + (i + q) * ldc + j, count: lanes) }
                                }
                                kernel6x16(ap, UnsafePointer(panel), count, edge, 16, load)
                                for q in 0..<r { (c + (i + q) * ldc + j).update(from: edge + 16 * q, count: lanes) }
                            }
                        }
                        j += 16
                    }
                    s0 += count
                }
            }
        }
    }

    /// dst[6·s + q] = A(i + q, s0 + s) = a[(i + q)·aRow + (s0 + s)·aStep] for s < count,
    /// q < r; 0 for r ≤ q < 6 (i + r ≤ m, A's row count). May write dst[6·count ..< 6·count + 2].
    @inline(__always)
    static func packA(_ a: UnsafePointer<Float>, _ aRow: Int, _ aStep: Int, _ m: Int, _ i: Int, _ r: Int, _ s0: Int, _ count: Int,
                      _ dst: UnsafeMutablePointer<Float>) {
        if r < 6 { dst.update(repeating: 0, count: 6 * count) }
        if aStep == 1 && r == 6 {
            // Six contiguous rows: transposed 8 steps at a time in registers.
            bc_internal_pack6(a + i * aRow + s0, aRow, Int32(count), dst)
        } else if aStep == 1 {
            for q in 0..<r {
                let src = a + (i + q) * aRow + s0
                for s in 0..<count { dst[6 * s + q] = src[s] }
            }
        } else if aRow == 1 && r == 6 && i + 8 <= m {
            // Six contiguous values per step, copied 8 at a time: the two extra land on the
            // next step's slots (rewritten next) or past this group (slack the caller
            // allocates). Reading A(i + 6), A(i + 7) stays inside A's m rows.
            for s in 0..<count {
                let src = a + i + (s0 + s) * aStep
                store8(load8(src), dst + 6 * s)
            }
        } else {
            for s in 0..<count {
                let src = a + i * aRow + (s0 + s) * aStep
                for q in 0..<r { dst[6 * s + q] = src[q * aRow] }
            }
        }
    }

    @inline(__always)
    static func load8(_ p: UnsafePointer<Float>) -> Vec8 { UnsafeRawPointer(p).loadUnaligned(as: Vec8.self) }

    @inline(__always)
    static func store8(_ v: Vec8, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vec8.self) }

    /// 6 rows (i) × 16 columns (j) of C over `steps` reduction steps: a[6·s + q] is
    /// A(i + q, s), b[16·s + jj] is B[s][j + jj]. Each value's chain starts from C (when
    /// `load`) or 0 and adds one FMA per step in ascending s. Not inlined: its own
    /// function keeps the twelve accumulators in registers.
    @inline(never)
    static func kernel6x16(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ steps: Int,
                           _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ load: Bool) {
        var c00 = Vec8(), c01 = Vec8(), c10 = Vec8(), c11 = Vec8(), c20 = Vec8(), c21 = Vec8()
        var c30 = Vec8(), c31 = Vec8(), c40 = Vec8(), c41 = Vec8(), c50 = Vec8(), c51 = Vec8()
        if load {
            c00 = load8(c); c01 = load8(c + 8)
            c10 = load8(c + ldc); c11 = load8(c + ldc + 8)
            c20 = load8(c + 2 * ldc); c21 = load8(c + 2 * ldc + 8)
            c30 = load8(c + 3 * ldc); c31 = load8(c + 3 * ldc + 8)
            c40 = load8(c + 4 * ldc); c41 = load8(c + 4 * ldc + 8)
            c50 = load8(c + 5 * ldc); c51 = load8(c + 5 * ldc + 8)
        }
        var ap = a, bp = b
        for _ in 0..<steps {
            let b0 = load8(bp), b1 = load8(bp + 8)
            var x = Vec8(repeating: ap[0])
            c00 = c00.addingProduct(x, b0); c01 = c01.addingProduct(x, b1)
            x = Vec8(repeating: ap[1])
            c10 = c10.addingProduct(x, b0); c11 = c11.addingProduct(x, b1)
            x = Vec8(repeating: ap[2])
            c20 = c20.addingProduct(x, b0); c21 = c21.addingProduct(x, b1)
            x = Vec8(repeating: ap[3])
            c30 = c30.addingProduct(x, b0); c31 = c31.addingProduct(x, b1)
            x = Vec8(repeating: ap[4])
            c40 = c40.addingProduct(x, b0); c41 = c41.addingProduct(x, b1)
            x = Vec8(repeating: ap[5])
            c50 = c50.addingProduct(x, b0); c51 = c51.addingProduct(x, b1)
            ap += 6
            bp += 16
        }
        store8(c00, c); store8(c01, c + 8)
        store8(c10, c + ldc); store8(c11, c + ldc + 8)
        store8(c20, c + 2 * ldc); store8(c21, c + 2 * ldc + 8)
        store8(c30, c + 3 * ldc); store8(c31, c + 3 * ldc + 8)
        store8(c40, c + 4 * ldc); store8(c41, c + 4 * ldc + 8)
        store8(c50, c + 5 * ldc); store8(c51, c + 5 * ldc + 8)
    }
}
