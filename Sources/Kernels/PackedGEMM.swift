import BCCore
#if canImport(Glibc)
import Glibc
#endif

package typealias Vec8 = SIMD8<Float>

/// A weight matrix W[rows × cols] (row o = output feature o) stored for the projection
/// kernel: panels of 16 output features; panel p holds, for k = 0..<cols in order, the
/// 16 values W[16p ..< 16p+16][k] (zero past the last row). The kernel then streams a
/// panel once per group of tokens with no repacking at run time.
package final class PackedWeights {
    package let rows: Int
    package let cols: Int
    let panels: Int
    let data: UnsafeMutablePointer<Float>

    /// Packs `w` (row-major rows × cols).
    package init(_ w: UnsafePointer<Float>, rows: Int, cols: Int) throws {
        self.rows = rows
        self.cols = cols
        panels = (rows + 15) / 16
        data = try Memory.allocateFloats(max(1, panels * cols * 16), fill: 0)
        repack(from: w)
    }

    deinit { free(data) }

    /// Copies row `r` of W to `out` (cols floats, gathered from its panel).
    package func copyRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        let src = data + (r / 16) * cols * 16 + r % 16
        for k in 0..<cols { out[k] = src[k * 16] }
    }

    /// Writes W row-major (rows × cols floats) to `out`: the exact values packed.
    package func unpack(into out: UnsafeMutablePointer<Float>) {
        for p in 0..<panels {
            let src = data + p * cols * 16
            for j in 0..<min(16, rows - p * 16) {
                let dst = out + (p * 16 + j) * cols
                for k in 0..<cols { dst[k] = src[k * 16 + j] }
            }
        }
    }

    /// Replaces W by `w` (row-major rows × cols) in place: same buffer, same layout as
    /// init (the padding past the last row stays zero). Must not run while a product
    /// reads these weights.
    package func repack(from w: UnsafePointer<Float>) {
        let rows = rows, cols = cols, data = data
        Parallel.forEach(panels) { p in
            let dst = data + p * cols * 16
            for j in 0..<min(16, rows - p * 16) {
                let src = w + (p * 16 + j) * cols
                for k in 0..<cols { dst[k * 16 + j] = src[k] }
            }
        }
    }
}

/// y[t][o] = Σ_k x[t][k] · W[o][k] for a token block x[tokens × cols] and packed weights.
///
/// Every output value is accumulated the same way whatever the number of tokens, the
/// tiling or the thread: starting from x[t][0]·W[o][0], one fused multiply-add per k in
/// ascending k. A token's projection is therefore bit-identical alone or in any batch
/// (the engine's batch invariance), and the single-token (decode) case is the same
/// arithmetic as the batched one. Work is split across threads by groups of panels.
package enum PackedGEMM {
    /// Panels per work item.
    static let panelsPerItem = 4
    /// Tokens per block: a block's activations (≤ 96 × cols floats) stay in L2 while
    /// every panel streams past them; weights are read once per block.
    static let tokensPerBlock = 96

    package static func multiply(_ x: UnsafePointer<Float>, ldx: Int, tokens: Int, _ w: PackedWeights,
                                _ y: UnsafeMutablePointer<Float>, ldy: Int) {
        if tokens <= 0 || w.rows == 0 { return }
        let groups = (w.panels + panelsPerItem - 1) / panelsPerItem
        let blocks = (tokens + tokensPerBlock - 1) / tokensPerBlock
        // Items run block by block, so both threads share the block in flight.
        Parallel.forEach(blocks * groups) { item in
            let p0 = (item % groups) * panelsPerItem, p1 = min(w.panels, p0 + panelsPerItem)
            let t0 = (item / groups) * tokensPerBlock, t1 = min(tokens, t0 + tokensPerBlock)
            if tokens == 1 {
                var p = p0
                while p + 2 <= p1 {
                    kernel1x32(x, w, p, y)
                    p += 2
                }
                if p < p1 { kernel6x16(x, ldx, 1, w, p, y, ldy) }
                return
            }
            for p in p0..<p1 {
                var t = t0
                while t < t1 {
                    let r = min(6, t1 - t)
                    kernel6x16(x + t * ldx, ldx, r, w, p, y + t * ldy, ldy)
                    t += r
                }
            }
        }
    }

    /// Up to 6 tokens × one panel. Rows past `r` repeat row 0 (same work, results dropped).
    @inline(__always)
    static func kernel6x16(_ x: UnsafePointer<Float>, _ ldx: Int, _ r: Int, _ w: PackedWeights, _ panel: Int,
                           _ y: UnsafeMutablePointer<Float>, _ ldy: Int) {
        let k = w.cols
        let x0 = x, x1 = r > 1 ? x + ldx : x, x2 = r > 2 ? x + 2 * ldx : x
        let x3 = r > 3 ? x + 3 * ldx : x, x4 = r > 4 ? x + 4 * ldx : x, x5 = r > 5 ? x + 5 * ldx : x
        var b = UnsafePointer(w.data + panel * k * 16)
        var c00 = Vec8(), c01 = Vec8(), c10 = Vec8(), c11 = Vec8(), c20 = Vec8(), c21 = Vec8()
        var c30 = Vec8(), c31 = Vec8(), c40 = Vec8(), c41 = Vec8(), c50 = Vec8(), c51 = Vec8()
        for kk in 0..<k {
            let b0 = UnsafeRawPointer(b).loadUnaligned(as: Vec8.self)
            let b1 = UnsafeRawPointer(b + 8).loadUnaligned(as: Vec8.self)
            var a = Vec8(repeating: x0[kk])
            c00 = c00.addingProduct(a, b0); c01 = c01.addingProduct(a, b1)
            a = Vec8(repeating: x1[kk])
            c10 = c10.addingProduct(a, b0); c11 = c11.addingProduct(a, b1)
            a = Vec8(repeating: x2[kk])
            c20 = c20.addingProduct(a, b0); c21 = c21.addingProduct(a, b1)
            a = Vec8(repeating: x3[kk])
            c30 = c30.addingProduct(a, b0); c31 = c31.addingProduct(a, b1)
            a = Vec8(repeating: x4[kk])
            c40 = c40.addingProduct(a, b0); c41 = c41.addingProduct(a, b1)
            a = Vec8(repeating: x5[kk])
            c50 = c50.addingProduct(a, b0); c51 = c51.addingProduct(a, b1)
            b += 16
        }
        let o = panel * 16, n = min(16, w.rows - o)
        store(c00, c01, y + o, n)
        if r > 1 { store(c10, c11, y + ldy + o, n) }
        if r > 2 { store(c20, c21, y + 2 * ldy + o, n) }
        if r > 3 { store(c30, c31, y + 3 * ldy + o, n) }
        if r > 4 { store(c40, c41, y + 4 * ldy + o, n) }
        if r > 5 { store(c50, c51, y + 5 * ldy + o, n) }
    }

    /// One token × two panels (decode): 4 independent accumulators per k hide the FMA
    /// latency; the per-value arithmetic is kernel6x16's.
    @inline(__always)
    static func kernel1x32(_ x: UnsafePointer<Float>, _ w: PackedWeights, _ panel: Int, _ y: UnsafeMutablePointer<Float>) {
        let k = w.cols
        var b = UnsafePointer(w.data + panel * k * 16)
        let stride = k * 16
        var c0 = Vec8(), c1 = Vec8(), c2 = Vec8(), c3 = Vec8()
        for kk in 0..<k {
            let a = Vec8(repeating: x[kk])
            c0 = c0.addingProduct(a, UnsafeRawPointer(b).loadUnaligned(as: Vec8.self))
            c1 = c1.addingProduct(a, UnsafeRawPointer(b + 8).loadUnaligned(as: Vec8.self))
            c2 = c2.addingProduct(a, UnsafeRawPointer(b + stride).loadUnaligned(as: Vec8.self))
            c3 = c3.addingProduct(a, UnsafeRawPointer(b + stride + 8).loadUnaligned(as: Vec8.self))
            b += 16
        }
        let o = panel * 16
        store(c0, c1, y + o, min(16, w.rows - o))
        if o + 16 < w.rows { store(c2, c3, y + o + 16, min(16, w.rows - o - 16)) }
    }

    @inline(__always)
    static func store(_ lo: Vec8, _ hi: Vec8, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        if n == 16 {
            UnsafeMutableRawPointer(y).storeBytes(of: lo, as: Vec8.self)
            UnsafeMutableRawPointer(y + 8).storeBytes(of: hi, as: Vec8.self)
            return
        }
        for j in 0..<n { y[j] = j < 8 ? lo[j] : hi[j - 8] }
    }
}
