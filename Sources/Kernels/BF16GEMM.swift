import BCCore
import CSupport
#if canImport(Glibc)
import Glibc
#endif

/// A projection weight W [rows × cols] rounded to bf16 in the two layouts training's
/// bf16 products read (`BF16GEMM`), as pairs of consecutive reduction steps (see
/// CSupport/bf16_gemm.h):
///
///     forward[p][kp][j]   = pair(W[32p + j][2kp], W[32p + j][2kp + 1])    (y = x·Wᵀ, reduction k)
///     backward[q][op][j]  = pair(W[2op][32q + j], W[2op + 1][32q + j])    (dX = dY·W, reduction o)
///
/// p < ⌈rows/32⌉, kp < ⌈cols/2⌉, q < ⌈cols/32⌉, op < ⌈rows/2⌉, j < 32; values past the
/// matrix are 0. Together 4 bytes per weight, the size of one float32 copy. `update`
/// refills both from float32 rows (after an optimizer step, for full fine-tuning).
package final class BF16Weights {
    package let rows: Int
    package let cols: Int
    let forward: UnsafeMutablePointer<UInt32>
    let backward: UnsafeMutablePointer<UInt32>
    /// Pairs per forward panel (⌈cols/2⌉) and per backward panel (⌈rows/2⌉).
    let colPairs: Int
    let rowPairs: Int

    /// Bytes held for a rows × cols matrix.
    package static func byteCount(rows: Int, cols: Int) -> Int {
        4 * ((rows + 31) / 32 * 32 * ((cols + 1) / 2) + (cols + 31) / 32 * 32 * ((rows + 1) / 2))
    }

    /// Allocates both layouts (zero); fill them with `update`.
    package init(rows: Int, cols: Int) throws {
        guard rows > 0, cols > 0, rows <= Int(Int32.max), cols <= Int(Int32.max) else {
            throw BatchCoreError.invalid("bf16 weights \(rows) × \(cols)")
        }
        self.rows = rows
        self.cols = cols
        colPairs = (cols + 1) / 2
        rowPairs = (rows + 1) / 2
        let f = try Memory.allocateFloats((rows + 31) / 32 * 32 * colPairs, fill: 0)
        let b: UnsafeMutablePointer<Float>
        do { b = try Memory.allocateFloats((cols + 31) / 32 * 32 * rowPairs, fill: 0) } catch {
            free(f)
            throw error
        }
        forward = UnsafeMutableRawPointer(f).bindMemory(to: UInt32.self, capacity: (rows + 31) / 32 * 32 * colPairs)
        backward = UnsafeMutableRawPointer(b).bindMemory(to: UInt32.self, capacity: (cols + 31) / 32 * 32 * rowPairs)
    }

    deinit {
        free(forward)
        free(backward)
    }

    /// Refills both layouts from W, handed out 32 rows at a time: `rowsOf(r0, count, scratch)`
    /// writes rows r0 ..< r0 + count row-major (stride cols) to `scratch` (32 × cols floats),
    /// e.g. unpacked from another layout. Runs in parallel over the row panels.
    package func update(_ rowsOf: (Int, Int, UnsafeMutablePointer<Float>) -> Void) {
        let cols = cols
        Parallel.forEach((rows + 31) / 32) { p in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 32 * cols) { scratch in
                rowsOf(32 * p, min(32, rows - 32 * p), scratch.baseAddress!)
                fill(panel: p, from: UnsafePointer(scratch.baseAddress!))
            }
        }
    }

    /// Refills both layouts from a row-major float32 W (rows × cols), in parallel over the
    /// row panels.
    package func update(rowMajor w: UnsafePointer<Float>) {
        let cols = cols
        Parallel.forEach((rows + 31) / 32) { p in fill(panel: p, from: w + 32 * p * cols) }
    }

    /// Row panel p from its rows 32p ..< 32p + n (row-major, stride cols): the forward panel
    /// p (pairs along k; rows past n zero) and pairs 16p ..< 16p + ⌈n/2⌉ of every backward
    /// panel. Writes only those values.
    private func fill(panel p: Int, from w: UnsafePointer<Float>) {
        let n = min(32, rows - 32 * p)
        bc_internal_bf16_interleave_rows(w, cols, Int32(n), cols, 32, forward + p * 32 * colPairs)
        for q in 0..<(cols + 31) / 32 {
            bc_internal_bf16_pack_panel(w + 32 * q, cols, n, Int32(min(32, cols - 32 * q)),
                                        backward + q * 32 * rowPairs + 16 * p * 32)
        }
    }
}

/// Products of training's bf16 mode: operands rounded to bf16, products exact, sums in
/// float32 (vdpbf16ps, two products per step) — PyTorch's autocast arithmetic, except that
/// results stay float32. Three shapes, as `ProjectionBackward`'s float32 ones:
///
///     y[T × rows]     =   x[T × cols] · Wᵀ          (`forward`)
///     dX[T × cols]  (=|+=) dY[T × rows] · W         (`inputGradient`)
///     dW[rows × cols] +=  dY[T × rows]ᵀ · X[T × cols] (`weightGradient`)
///
/// Determinism: every output value is one chain over its reduction index in ascending
/// pairs, starting from 0 or from the value in the output; blocking stores and reloads the
/// float32 chain, which is exact, and each output tile belongs to one work item: the same
/// bits for any thread count and tiling. A row of `forward`/`inputGradient` depends only
/// on its own input row (batch invariant).
///
/// Needs AVX-512 BF16 (`isSupported`); callers check it before choosing this mode.
package enum BF16GEMM {
    /// Whether this CPU runs the bf16 products.
    package static let isSupported: Bool = bc_internal_has_avx512_bf16() != 0
    /// Reduction steps per block (even: blocks start on a pair).
    static let stepsPerBlock = 256
    /// Output rows per work item (groups of 8) when there are many rows.
    static let tallRowsPerItem = 192
    /// Widest work item in output columns.
    static let maxColsPerItem = 512

    /// y[t][o] = Σ_k x[t][k]·W[o][k] (t < tokens; strides ldx ≥ cols, ldy ≥ rows).
    package static func forward(_ x: UnsafePointer<Float>, ldx: Int, tokens: Int, _ w: BF16Weights,
                                _ y: UnsafeMutablePointer<Float>, ldy: Int) {
        if tokens <= 0 { return }
        let colPairs = w.colPairs, base = UnsafePointer(w.forward)
        multiply(m: tokens, n: w.rows, steps: w.cols, c: y, ldc: ldy, startFromC: false,
                 packA: { i, r, s0, count, dst in bc_internal_bf16_interleave_rows(x + i * ldx + s0, ldx, Int32(r), count, 8, dst) },
                 panelB: { s0, _, j, _, _ in base + (j / 32) * 32 * colPairs + (s0 / 2) * 32 })
    }

    /// dX[t][k] (=|+=) Σ_o dY[t][o]·W[o][k] (strides ldDY ≥ rows, ldDX ≥ cols), the sum
    /// over o in `outputs` only when given (an even start: a run of W's rows, e.g. a block
    /// of the vocabulary; dY then still points at column 0).
    package static func inputGradient(_ dY: UnsafePointer<Float>, ldDY: Int, tokens: Int, _ w: BF16Weights,
                                      _ dX: UnsafeMutablePointer<Float>, ldDX: Int, accumulate: Bool,
                                      outputs: Range<Int>? = nil) {
        if tokens <= 0 { return }
        let o = outputs ?? 0..<w.rows
        precondition(o.lowerBound % 2 == 0 && o.lowerBound >= 0 && o.upperBound <= w.rows, "bf16 dX over rows \(o)")
        let rowPairs = w.rowPairs, base = UnsafePointer(w.backward) + o.lowerBound / 2 * 32, dY = dY + o.lowerBound
        multiply(m: tokens, n: w.cols, steps: o.count, c: dX, ldc: ldDX, startFromC: accumulate,
                 packA: { i, r, s0, count, dst in bc_internal_bf16_interleave_rows(dY + i * ldDY + s0, ldDY, Int32(r), count, 8, dst) },
                 panelB: { s0, _, j, _, _ in base + (j / 32) * 32 * rowPairs + (s0 / 2) * 32 })
    }

    /// dW[o][k] += Σ_t dY[t][o]·X[t][k] (dW row-major rows × cols; strides ldDY, ldX).
    package static func weightGradient(_ dY: UnsafePointer<Float>, ldDY: Int, _ x: UnsafePointer<Float>, ldX: Int,
                                       tokens: Int, rows: Int, cols: Int, _ dW: UnsafeMutablePointer<Float>) {
        if tokens <= 0 || rows <= 0 || cols <= 0 { return }
        multiply(m: rows, n: cols, steps: tokens, c: dW, ldc: cols, startFromC: true,
                 packA: { i, r, s0, count, dst in bc_internal_bf16_pack_cols(dY + s0 * ldDY + i, ldDY, Int32(r), count, dst) },
                 panelB: { s0, count, j, lanes, scratch in
                     bc_internal_bf16_pack_panel(x + s0 * ldX + j, ldX, count, Int32(lanes), scratch)
                     return UnsafePointer(scratch)
                 })
    }

    /// An operand of `product`: A(i, s) (or B(s, j)) = base[i·rowStride + s·stepStride]
    /// with one of the two strides 1 (rows contiguous in the reduction, or in the
    /// other index).
    package struct Operand {
        let base: UnsafePointer<Float>
        let rowStride: Int
        let stepStride: Int
        /// Row i at base + i·ld, the reduction along the row (x[t][k] as A(t, k)).
        package static func rows(_ p: UnsafePointer<Float>, ld: Int) -> Operand { Operand(base: p, rowStride: ld, stepStride: 1) }
        /// Step s at base + s·ld, the other index along the row (X[t][k] as B(t, k), or
        /// dY[t][o] as A(o, t)).
        package static func steps(_ p: UnsafePointer<Float>, ld: Int) -> Operand { Operand(base: p, rowStride: 1, stepStride: ld) }
    }

    /// C[i][j] (=|+=) Σ_s A(i, s)·B(s, j) (i < m, j < n, s < steps) for float32 operands
    /// given by strides (`Operand`), rounded to bf16 as they are packed: the low-rank
    /// products of LoRA training in bf16 compute. A as `.rows` or `.steps` (then at most
    /// 8 contiguous values per step are read per group); B as `.steps` (B[s][j] rows) or
    /// `.rows` (B(s, j) = M[j][s]: M's rows are B's columns).
    package static func product(_ a: Operand, _ b: Operand, m: Int, n: Int, steps: Int,
                                _ c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) {
        multiply(m: m, n: n, steps: steps, c: c, ldc: ldc, startFromC: accumulate,
                 packA: { i, r, s0, count, dst in
                     if a.stepStride == 1 {
                         bc_internal_bf16_interleave_rows(a.base + i * a.rowStride + s0, a.rowStride, Int32(r), count, 8, dst)
                     } else {
                         bc_internal_bf16_pack_cols(a.base + s0 * a.stepStride + i, a.stepStride, Int32(r), count, dst)
                     }
                 },
                 panelB: { s0, count, j, lanes, scratch in
                     if b.rowStride == 1 {
                         bc_internal_bf16_pack_panel(b.base + s0 * b.stepStride + j, b.stepStride, count, Int32(lanes), scratch)
                     } else {
                         bc_internal_bf16_interleave_rows(b.base + j * b.rowStride + s0, b.rowStride, Int32(lanes), count, 32, scratch)
                     }
                     return UnsafePointer(scratch)
                 })
    }

    /// C[i][j] (=|+=) Σ_s A(i, s)·B(s, j) for i < m, j < n, s < steps.
    /// `packA(i, r, s0, count, dst)` writes the 8-row micro-panel of rows i ..< i + r (r ≤ 8)
    /// over steps s0 ..< s0 + count; `panelB(s0, count, j, lanes, scratch)` returns the
    /// 32-column panel of columns j ..< j + lanes over the same steps, from a precomputed
    /// layout or written into `scratch` (⌈count/2⌉ × 32 words).
    static func multiply(m: Int, n: Int, steps: Int, c: UnsafeMutablePointer<Float>, ldc: Int, startFromC: Bool,
                         packA: (Int, Int, Int, Int, UnsafeMutablePointer<UInt32>) -> Void,
                         panelB: (Int, Int, Int, Int, UnsafeMutablePointer<UInt32>) -> UnsafePointer<UInt32>) {
        if m <= 0 || n <= 0 { return }
        if steps <= 0 {
            if !startFromC { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
            return
        }
        // Tiling (never changes a value): few rows (≤ 192): one row item, columns in 2
        // items per thread; else items of 192 rows while that leaves 4 per thread, else 48.
        let threads = Parallel.threadCount
        let rowsPerItem = m <= tallRowsPerItem ? (m + 7) / 8 * 8
            : (m + tallRowsPerItem - 1) / tallRowsPerItem >= 4 * threads ? tallRowsPerItem : 48
        let rowItems = (m + rowsPerItem - 1) / rowsPerItem
        let itemsWanted = rowItems == 1 ? 2 * threads : 4 * threads
        var colItems = (n + maxColsPerItem - 1) / maxColsPerItem
        while rowItems * colItems < itemsWanted && (colItems + 1) * 64 <= n { colItems += 1 }
        let colsPerItem = ((n + colItems - 1) / colItems + 31) / 32 * 32
        let groupsPerItem = rowsPerItem / 8
        let pairsPerBlock = stepsPerBlock / 2
        // words: B panel (pairs × 32), A micro-panels (groups × pairs × 8); floats: 8 × 32 edge.
        let words = pairsPerBlock * 32 + groupsPerItem * pairsPerBlock * 8 + 256
        Parallel.forEach(rowItems * colItems) { item in
            let i0 = (item / colItems) * rowsPerItem, i1 = min(m, i0 + rowsPerItem)
            let j0 = (item % colItems) * colsPerItem, j1 = min(n, j0 + colsPerItem)
            let groups = (i1 - i0 + 7) / 8
            withUnsafeTemporaryAllocation(byteCount: words * 4, alignment: 64) { raw in
                let scratchB = raw.baseAddress!.assumingMemoryBound(to: UInt32.self)
                let apack = scratchB + pairsPerBlock * 32
                let edge = UnsafeMutableRawPointer(apack + groupsPerItem * pairsPerBlock * 8).assumingMemoryBound(to: Float.self)
                var s0 = 0
                while s0 < steps {
                    let count = min(stepsPerBlock, steps - s0), pairs = (count + 1) / 2
                    let load: Int32 = startFromC || s0 > 0 ? 1 : 0
                    for g in 0..<groups {
                        packA(i0 + 8 * g, min(8, i1 - i0 - 8 * g), s0, count, apack + g * 8 * pairs)
                    }
                    var j = j0
                    while j < j1 {
                        let lanes = min(32, j1 - j)
                        let b = panelB(s0, count, j, lanes, scratchB)
                        for g in 0..<groups {
                            let i = i0 + 8 * g, r = min(8, i1 - i)
                            let ap = UnsafePointer(apack + g * 8 * pairs)
                            if r == 8 && lanes == 32 {
                                bc_internal_bf16_kernel8x32(ap, b, pairs, c + i * ldc + j, ldc, load)
                            } else {
                                edge.update(repeating: 0, count: 256)
                                if load != 0 {
                                    for q in 0..<r { (edge + 32 * q).update(from: c + (i + q) * ldc + j, count: lanes) }
                                }
                                bc_internal_bf16_kernel8x32(ap, b, pairs, edge, 32, load)
                                for q in 0..<r { (c + (i + q) * ldc + j).update(from: edge + 32 * q, count: lanes) }
                            }
                        }
                        j += 32
                    }
                    s0 += count
                }
            }
        }
    }
}
