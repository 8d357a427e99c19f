import CSupport
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Scaled dot-product attention of the query heads that share ONE kv head (GQA; one
/// head for plain multi-head attention), for ONE query row, over the keys and values of
/// a `KVView` (blocks of a paged or contiguous cache, or a training batch's own rows):
///
///     out_h = softmax(scale · q_h·Kᵀ over positions lo..<visible) · V     for each head h
///
/// Every output value is produced by the same float operations in the same order,
/// whatever other rows, heads or sequences are computed around it, on whichever thread
/// and however the positions are split into segments: a row's result never depends on
/// its batch (the engine's batch invariance rests on this).
///
/// * Scores: one 8-lane FMA chain per position over the head dimension, then the lanes
///   summed as ((l0+l1)+(l2+l3)) + ((l4+l5)+(l6+l7)). Positions go eight at a time so
///   that eight chains are in flight and the eight lane sums come out of one transposing
///   horizontal-add tree; all heads of the group score a block of eight keys while it
///   is in L1, so each key is read from memory once per row.
/// * Softmax: VectorMath.softmax per head.
/// * P·V: positions in ascending order into register-resident 16-lane sums, 64 output
///   lanes per pass, head after head while the values are in L2.
package enum Attention {
    @inline(__always)
    static func dot(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ hd: Int) -> Float {
        var acc = Vec16(repeating: 0)
        var c = 0
        while c + 16 <= hd {
            acc = fma16(load16(q, c, 16), load16(k, c, 16), acc)
            c += 16
        }
        if c < hd { acc = fma16(load16(q, c, hd - c), load16(k, c, hd - c), acc) }
        return acc.sum()
    }

    #if arch(x86_64)
    @inline(__always)
    static func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
    }

    /// q·k for the `count` (1...8) keys at k, k + stride, ...: lane i is position i
    /// (lanes ≥ count repeat the last key). hd is a multiple of 8.
    @inline(__always)
    static func dot8(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ stride: Int, _ count: Int,
                     _ hd: Int) -> SIMD8<Float> {
        let last = count - 1
        let k0 = k, k1 = k + min(1, last) * stride, k2 = k + min(2, last) * stride, k3 = k + min(3, last) * stride
        let k4 = k + min(4, last) * stride, k5 = k + min(5, last) * stride
        let k6 = k + min(6, last) * stride, k7 = k + min(7, last) * stride
        var a0 = SIMD8<Float>(repeating: 0), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0
        var j = 0
        while j < hd {
            let qv = load8(q + j)
            a0 = a0.addingProduct(qv, load8(k0 + j))
            a1 = a1.addingProduct(qv, load8(k1 + j))
            a2 = a2.addingProduct(qv, load8(k2 + j))
            a3 = a3.addingProduct(qv, load8(k3 + j))
            a4 = a4.addingProduct(qv, load8(k4 + j))
            a5 = a5.addingProduct(qv, load8(k5 + j))
            a6 = a6.addingProduct(qv, load8(k6 + j))
            a7 = a7.addingProduct(qv, load8(k7 + j))
            j += 8
        }
        // Transposing reduction: u0 lanes = [p0..p3 low-half sums | p0..p3 high-half sums].
        let u0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3))
        let u1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7))
        return SIMD8(lowHalf: u0.lowHalf + u0.highHalf, highHalf: u1.lowHalf + u1.highHalf)
    }
    #endif

    /// Requests every cache line of the head's visible keys and values (into L2) before
    /// any is used. The dot products and P·V chains depend on their loads, so reading
    /// cold rows as they come keeps only a few cache misses in flight; a loop of
    /// independent prefetches keeps more of them in flight, and the passes below then
    /// read from L2 (a head's rows are ~256 KB at 500 positions). Measured on 40
    /// sequences x 30 layers x 460 positions of paged F32 KV (SmolLM2-135M's shape, far
    /// beyond L3): ~10% less time per (head, position) than without.
    @inline(__always)
    static func prefetch(_ kv: KVView, lo: Int, visible: Int, offset: Int, hd: Int) {
        let kvStride = kv.rowStride
        for seg in kv.segments {
            let a = max(lo, seg.start), b = min(visible, seg.start + seg.count)
            if a >= b { continue }
            let k = UnsafeRawPointer(seg.keys + (a - seg.start) * kvStride + offset)
            let v = UnsafeRawPointer(seg.values + (a - seg.start) * kvStride + offset)
            let rowBytes = hd * 4, strideBytes = kvStride * 4
            for r in 0..<(b - a) {
                var c = 0
                while c < rowBytes {
                    bc_internal_prefetch_l2(k + r * strideBytes + c)
                    bc_internal_prefetch_l2(v + r * strideBytes + c)
                    c += 64
                }
                bc_internal_prefetch_l2(k + r * strideBytes + rowBytes - 4)
                bc_internal_prefetch_l2(v + r * strideBytes + rowBytes - 4)
            }
        }
    }

    /// `q`: `heads` query heads of hd values each (head h at q + h·hd); keys/values of
    /// position p are at `segment.keys/values + (p - segment.start) · kv.rowStride + offset`.
    /// `scores` holds heads · (visible - lo) floats of scratch; `out` receives heads · hd
    /// floats (head h at out + h·hd). `prefetchRows`: request the rows up front (see
    /// `prefetch`); worth it when they are likely cold — a decode row, or the first row of
    /// a prompt chunk — and a small cost when the row before just read them.
    package static func group(q: UnsafePointer<Float>, heads: Int, kv: KVView, offset: Int,
                             headDim hd: Int, lo: Int, visible: Int, scale: Float,
                             scores: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>,
                             prefetchRows: Bool = true) {
        let n = visible - lo
        guard n > 0 else {
            out.update(repeating: 0, count: heads * hd)
            return
        }
        let segments = kv.segments, kvStride = kv.rowStride
        if prefetchRows { prefetch(kv, lo: lo, visible: visible, offset: offset, hd: hd) }
        for seg in segments {
            let a = max(lo, seg.start), b = min(visible, seg.start + seg.count)
            if a >= b { continue }
            var k = seg.keys + (a - seg.start) * kvStride + offset
            #if arch(x86_64)
            if hd % 8 == 0 {
                var p = a
                while p < b {
                    let count = min(8, b - p)
                    for h in 0..<heads {
                        let s = dot8(q + h * hd, k, kvStride, count, hd) * scale
                        let dst = scores + h * n + (p - lo)
                        if count == 8 {
                            UnsafeMutableRawPointer(dst).storeBytes(of: s, as: SIMD8<Float>.self)
                        } else {
                            for i in 0..<count { dst[i] = s[i] }
                        }
                    }
                    k += 8 * kvStride
                    p += 8
                }
                continue
            }
            #endif
            for p in a..<b {
                for h in 0..<heads { scores[h * n + p - lo] = dot(q + h * hd, k, hd) * scale }
                k += kvStride
            }
        }
        for h in 0..<heads { VectorMath.softmax(scores + h * n, n) }
        weightedValues(scores, heads: heads, kv: kv, offset: offset, headDim: hd, lo: lo, visible: visible, out: out)
    }

    /// out_h = Σ_p w_h[p - lo] · v_p over positions lo..<visible of `kv` (row p's values at
    /// the view's segment + offset), for each head h with weights scores + h·n: P·V, 64
    /// output lanes (four 16-lane sums) per pass over the positions, positions ascending.
    @inline(__always)
    static func weightedValues(_ scores: UnsafePointer<Float>, heads: Int, kv: KVView, offset: Int, headDim hd: Int,
                               lo: Int, visible: Int, out: UnsafeMutablePointer<Float>) {
        let n = visible - lo, segments = kv.segments, kvStride = kv.rowStride
        var c = 0
        while c < hd {
            let l0 = min(16, hd - c), l1 = min(16, max(0, hd - c - 16))
            let l2 = min(16, max(0, hd - c - 32)), l3 = min(16, max(0, hd - c - 48))
            for h in 0..<heads {
                let w = scores + h * n
                var a0 = Vec16(repeating: 0), a1 = a0, a2 = a0, a3 = a0
                for seg in segments {
                    let a = max(lo, seg.start), b = min(visible, seg.start + seg.count)
                    if a >= b { continue }
                    accumulateValues(w - lo, a, b, UnsafePointer(seg.values + (a - seg.start) * kvStride + offset + c),
                                     kvStride, l0, l1, l2, l3, &a0, &a1, &a2, &a3)
                }
                let o = out + h * hd
                store16(a0, o, c, l0)
                if l1 > 0 { store16(a1, o, c + 16, l1) }
                if l2 > 0 { store16(a2, o, c + 32, l2) }
                if l3 > 0 { store16(a3, o, c + 48, l3) }
            }
            c += 64
        }
    }

    /// a0..a3 += Σ_{p in a..<b} w[p] · v_p[0..<64] (lane counts l0..l3 ≤ 16; v: row a's
    /// first value, rows kvStride apart), positions ascending: the one P·V run both the
    /// per-row and the tiled kernels use, so their sums are the same float operations.
    @inline(__always)
    static func accumulateValues(_ w: UnsafePointer<Float>, _ a: Int, _ b: Int, _ first: UnsafePointer<Float>,
                                 _ kvStride: Int, _ l0: Int, _ l1: Int, _ l2: Int, _ l3: Int,
                                 _ a0: inout Vec16, _ a1: inout Vec16, _ a2: inout Vec16, _ a3: inout Vec16) {
        var v = first
        if l3 == 16 {
            for p in a..<b {
                let s = w[p]
                a0 = fma16(s, load16(v, 0, 16), a0)
                a1 = fma16(s, load16(v, 16, 16), a1)
                a2 = fma16(s, load16(v, 32, 16), a2)
                a3 = fma16(s, load16(v, 48, 16), a3)
                v += kvStride
            }
        } else {
            for p in a..<b {
                let s = w[p]
                a0 = fma16(s, load16(v, 0, l0), a0)
                if l1 > 0 { a1 = fma16(s, load16(v, 16, l1), a1) }
                if l2 > 0 { a2 = fma16(s, load16(v, 32, l2), a2) }
                if l3 > 0 { a3 = fma16(s, load16(v, 48, l3), a3) }
                v += kvStride
            }
        }
    }
}
