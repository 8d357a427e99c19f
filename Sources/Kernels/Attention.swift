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
/// The order is llama.cpp's (ggml's CPU backend, attention without flash attention, one
/// query row — a decode step), so that the same inputs give llama.cpp's bits (issue #15;
/// GgmlOpsBitTests):
///
/// * Scores: `dot` — ggml_vec_dot_f32's four 16-lane sums and its reduction tree.
///   Positions go eight at a time (`dot8`) so that eight dot products are in flight and
///   their trees are reduced side by side; all heads of the group score a block of eight
///   keys while it is in L1, so each key is read from memory once per row.
/// * Softmax: VectorMath.softmax per head (ggml's soft_max: its exp, 16-value block sums
///   added in double).
/// * P·V: `weightedValues` — ggml_vec_dot_f32 over the transposed values: 64 slot sums
///   per output (position p in slot p mod 64), reduced by the same tree.
package enum Attention {
    /// q·k in the order of ggml's f32 dot product (`ggml_vec_dot_f32`, AVX-512 build: what
    /// llama.cpp's attention scores run without flash attention): four 16-lane sums a_j
    /// over chunks of 64 values (a_j += q[64c + 16j + l]·k[64c + 16j + l], fused, from
    /// zero), combined as (a0 + a2) + (a1 + a3), the 16 lanes added by `treeSum16`; the
    /// hd % 64 leftover values then added one by one, fused.
    @inline(__always)
    static func dot(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ hd: Int) -> Float {
        var s = treeSum16(lanes16(q, k, hd))
        var c = hd & ~63
        while c < hd {
            s = s.addingProduct(q[c], k[c])
            c += 1
        }
        return s
    }

    /// `dot`'s 16 lane sums (a0 + a2) + (a1 + a3) over the first hd & ~63 values.
    @inline(__always)
    static func lanes16(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ hd: Int) -> Vec16 {
        var a0 = Vec16(repeating: 0), a1 = a0, a2 = a0, a3 = a0
        var c = 0
        while c + 64 <= hd {
            a0 = fma16(load16(q, c, 16), load16(k, c, 16), a0)
            a1 = fma16(load16(q, c + 16, 16), load16(k, c + 16, 16), a1)
            a2 = fma16(load16(q, c + 32, 16), load16(k, c + 32, 16), a2)
            a3 = fma16(load16(q, c + 48, 16), load16(k, c + 48, 16), a3)
            c += 64
        }
        return (a0 + a2) + (a1 + a3)
    }

    #if arch(x86_64)
    /// `dot` of q with the `count` (1...8) keys at k, k + stride, ...: lane i is position i
    /// (lanes ≥ count repeat the last key). hd is a multiple of 8. For hd % 64 == 0 the
    /// eight `treeSum16` trees run side by side: the first level in each position's own
    /// register, the next two in registers holding two positions, the last as one
    /// horizontal add — each lane adds exactly the pairs `treeSum16` adds.
    @inline(__always)
    static func dot8(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ stride: Int, _ count: Int,
                     _ hd: Int) -> SIMD8<Float> {
        let last = count &- 1
        if hd % 64 != 0 {
            var r = SIMD8<Float>(repeating: 0)
            for i in 0..<8 { r[i] = dot(q, k + min(i, last) * stride, hd) }
            return r
        }
        let t0: SIMD8<Float>, t1: SIMD8<Float>, t2: SIMD8<Float>, t3: SIMD8<Float>
        let t4: SIMD8<Float>, t5: SIMD8<Float>, t6: SIMD8<Float>, t7: SIMD8<Float>
        if hd == 64 {
            // One chunk: a_j = q_j·k_j (fma from zero is the rounded product), q in registers.
            let q0 = load16(q, 0, 16), q1 = load16(q, 16, 16), q2 = load16(q, 32, 16), q3 = load16(q, 48, 16)
            @inline(__always) func first(_ i: Int) -> SIMD8<Float> {
                let r = k + min(i, last) &* stride
                let s = (q0 * load16(r, 0, 16) + q2 * load16(r, 32, 16)) + (q1 * load16(r, 16, 16) + q3 * load16(r, 48, 16))
                return s.lowHalf + s.highHalf
            }
            t0 = first(0); t1 = first(1); t2 = first(2); t3 = first(3)
            t4 = first(4); t5 = first(5); t6 = first(6); t7 = first(7)
        } else {
            @inline(__always) func first(_ i: Int) -> SIMD8<Float> {
                let s = lanes16(q, k + min(i, last) &* stride, hd)
                return s.lowHalf + s.highHalf
            }
            t0 = first(0); t1 = first(1); t2 = first(2); t3 = first(3)
            t4 = first(4); t5 = first(5); t6 = first(6); t7 = first(7)
        }
        @inline(__always) func second(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
            SIMD8(lowHalf: a.lowHalf, highHalf: b.lowHalf) + SIMD8(lowHalf: a.highHalf, highHalf: b.highHalf)
        }
        // [lanes 0..<4 of position a | of position b] → [a0+a2, a1+a3, c0+c2, c1+c3 | b.., d..]
        @inline(__always) func third(_ ab: SIMD8<Float>, _ cd: SIMD8<Float>) -> SIMD8<Float> {
            let x = unsafeBitCast(ab, to: SIMD4<Double>.self), y = unsafeBitCast(cd, to: SIMD4<Double>.self)
            return unsafeBitCast(_mm256_unpacklo_pd(x, y), to: SIMD8<Float>.self)
                + unsafeBitCast(_mm256_unpackhi_pd(x, y), to: SIMD8<Float>.self)
        }
        let v0 = third(second(t0, t1), second(t2, t3)), v1 = third(second(t4, t5), second(t6, t7))
        // Lanes p0, p2, p4, p6, p1, p3, p5, p7 → positions in order.
        let r = _mm256_hadd_ps(v0, v1)
        return _mm256_permutevar8x32_ps(r, unsafeBitCast(SIMD8<Int32>(0, 4, 1, 5, 2, 6, 3, 7), to: SIMD4<Int64>.self))
    }
    #endif

    /// out_h = Σ_p w_h[p - lo] · v_p over positions lo..<visible of `kv` (row p's values at
    /// the view's segment + offset), for each head h with weights scores + h·n, in the
    /// order of ggml's f32 dot product over a transposed V (llama.cpp's decode P·V): 64
    /// slot sums per output value, position p into slot p mod 64 (fused, positions
    /// ascending, from zero); slots l, 16 + l, 32 + l, 48 + l combined as
    /// (s_l + s_{32+l}) + (s_{16+l} + s_{48+l}), then those 16 by `treeSum16`'s pairs.
    /// Each slot's chain runs in registers over 64 output lanes (positions 64 apart, their
    /// rows found through a per-call table of row pointers; the row four slots ahead is
    /// prefetched, as a 64-row stride is lost on the hardware prefetchers) and lands in a
    /// 64 × hd scratch that `reduceSlots` folds. (A chain starting from a zero sum with a fused step is the
    /// rounded product, ggml's first step too.)
    @inline(__always)
    static func weightedValues(_ scores: UnsafePointer<Float>, heads: Int, kv: KVView, offset: Int, headDim hd: Int,
                               lo: Int, visible: Int, out: UnsafeMutablePointer<Float>) {
        let n = visible - lo
        guard n > 0 else { return }
        // Row pointers of positions lo..<visible; a position no segment holds (none should)
        // reads a zero row, which adds nothing.
        withUnsafeTemporaryAllocation(of: Float.self, capacity: hd) { zeroRow in
        let zero = UnsafePointer(zeroRow.baseAddress!)
        zeroRow.initialize(repeating: 0)
        withUnsafeTemporaryAllocation(of: UnsafePointer<Float>.self, capacity: n) { rowTable in
            let rows = rowTable.baseAddress!
            valueRows(kv, first: lo, last: visible, offset: offset, zero: zero, into: rows)
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 3 * 64 * hd) { buf in
                let slots = buf.baseAddress!
                var first = 0
                // GQA groups of three heads (SmolLM2's): one pass reads each value row once
                // for all three, 32 output lanes at a time (twelve register sums).
                if hd % 32 == 0 {
                    while heads - first >= 3 {
                        let w0 = scores + first * n, w1 = w0 + n, w2 = w1 + n
                        var c = 0
                        while c < hd {
                            for slot in 0..<64 {
                                var a0 = Vec16(repeating: 0), a1 = a0, b0 = a0, b1 = a0, d0 = a0, d1 = a0
                                var i = (slot - lo) & 63
                                while i < n {
                                    let v = rows[i] + c
                                    // The row slot + 4 reads at this step (the chains' stride
                                    // defeats the hardware prefetchers).
                                    let ahead = rows[min(i &+ 4, n &- 1)] + c
                                    bc_internal_prefetch_l2(ahead)
                                    bc_internal_prefetch_l2(ahead + 16)
                                    let v0 = load16(v, 0, 16), v1 = load16(v, 16, 16)
                                    a0 = fma16(w0[i], v0, a0); a1 = fma16(w0[i], v1, a1)
                                    b0 = fma16(w1[i], v0, b0); b1 = fma16(w1[i], v1, b1)
                                    d0 = fma16(w2[i], v0, d0); d1 = fma16(w2[i], v1, d1)
                                    i &+= 64
                                }
                                let s0 = slots + slot * hd + c, s1 = s0 + 64 * hd, s2 = s1 + 64 * hd
                                store16(a0, s0, 0, 16); store16(a1, s0, 16, 16)
                                store16(b0, s1, 0, 16); store16(b1, s1, 16, 16)
                                store16(d0, s2, 0, 16); store16(d1, s2, 16, 16)
                            }
                            c += 32
                        }
                        for k in 0..<3 { reduceSlots(slots + k * 64 * hd, hd, out + (first + k) * hd) }
                        first += 3
                    }
                }
                for h in first..<heads {
                    let w = scores + h * n
                    var c = 0
                    while c < hd {
                        let l0 = min(16, hd - c), l1 = min(16, max(0, hd - c - 16))
                        let l2 = min(16, max(0, hd - c - 32)), l3 = min(16, max(0, hd - c - 48))
                        for slot in 0..<64 {
                            var a0 = Vec16(repeating: 0), a1 = a0, a2 = a0, a3 = a0
                            // The first position >= lo in this slot, then every 64th.
                            var i = (slot - lo) & 63
                            if l3 == 16 {
                                while i < n {
                                    let v = rows[i] + c, s = w[i]
                                    bc_internal_prefetch_l2(rows[min(i &+ 4, n &- 1)] + c)
                                    a0 = fma16(s, load16(v, 0, 16), a0)
                                    a1 = fma16(s, load16(v, 16, 16), a1)
                                    a2 = fma16(s, load16(v, 32, 16), a2)
                                    a3 = fma16(s, load16(v, 48, 16), a3)
                                    i &+= 64
                                }
                            } else {
                                while i < n {
                                    let v = rows[i] + c, s = w[i]
                                    a0 = fma16(s, load16(v, 0, l0), a0)
                                    if l1 > 0 { a1 = fma16(s, load16(v, 16, l1), a1) }
                                    if l2 > 0 { a2 = fma16(s, load16(v, 32, l2), a2) }
                                    if l3 > 0 { a3 = fma16(s, load16(v, 48, l3), a3) }
                                    i &+= 64
                                }
                            }
                            let dst = slots + slot * hd
                            store16(a0, dst, c, l0)
                            if l1 > 0 { store16(a1, dst, c + 16, l1) }
                            if l2 > 0 { store16(a2, dst, c + 32, l2) }
                            if l3 > 0 { store16(a3, dst, c + 48, l3) }
                        }
                        c += 64
                    }
                    reduceSlots(slots, hd, out + h * hd)
                }
            }
        }
        }
    }

    /// out[0..<hd] = the 64 slot rows of `weightedValues` (slot i at s + i·hd) combined in
    /// its order; overwrites the slots.
    @inline(__always)
    static func reduceSlots(_ s: UnsafeMutablePointer<Float>, _ hd: Int, _ out: UnsafeMutablePointer<Float>) {
        forEachBlock16(hd) { c, lanes in
            @inline(__always) func row(_ i: Int) -> Vec16 { load16(s + i * hd, c, lanes) }
            for l in 0..<16 { store16((row(l) + row(32 + l)) + (row(16 + l) + row(48 + l)), s + l * hd, c, lanes) }
            for l in 0..<8 { store16(row(l) + row(l + 8), s + l * hd, c, lanes) }
            for l in 0..<4 { store16(row(l) + row(l + 4), s + l * hd, c, lanes) }
            for l in 0..<2 { store16(row(l) + row(l + 2), s + l * hd, c, lanes) }
            store16(row(0) + row(1), out, c, lanes)
        }
    }

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
}
