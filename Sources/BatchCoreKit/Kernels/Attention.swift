/// Scaled dot-product attention of ONE query head of ONE query row over a sequence's
/// cached keys and values (the KV segments of a paged or contiguous cache):
///
///     out = softmax(scale · q·Kᵀ over positions lo..<visible) · V
///
/// Every output value is produced by the same float operations in the same order,
/// whatever other rows, heads or sequences are computed around it and on whichever
/// thread: a row's result never depends on its batch (the engine's batch invariance
/// rests on this). Scores are one dot product per position (16-lane FMAs over the
/// head dimension, then a lane sum), the softmax is VectorMath.softmax, and P·V
/// accumulates positions in ascending order into register-resident 16-lane sums.
public enum Attention {
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

    /// `q`: the head's hd query values; keys/values of position p are at
    /// `segment.keys/values + (p - segment.start) · kvStride + offset`. `scores` holds
    /// visible - lo floats of scratch; `out` receives hd floats.
    public static func head(q: UnsafePointer<Float>, segments: [KVSegment], kvStride: Int, offset: Int, headDim hd: Int,
                     lo: Int, visible: Int, scale: Float, scores: UnsafeMutablePointer<Float>,
                     out: UnsafeMutablePointer<Float>) {
        let n = visible - lo
        guard n > 0 else {
            out.update(repeating: 0, count: hd)
            return
        }
        for seg in segments {
            let a = max(lo, seg.start), b = min(visible, seg.start + seg.count)
            if a >= b { continue }
            var k = seg.keys + (a - seg.start) * kvStride + offset
            for p in a..<b {
                scores[p - lo] = dot(q, k, hd) * scale
                k += kvStride
            }
        }
        VectorMath.softmax(scores, n)
        // P·V, 64 output lanes (four 16-lane sums) per pass over the positions.
        var c = 0
        while c < hd {
            let l0 = min(16, hd - c), l1 = min(16, max(0, hd - c - 16))
            let l2 = min(16, max(0, hd - c - 32)), l3 = min(16, max(0, hd - c - 48))
            var a0 = Vec16(repeating: 0), a1 = a0, a2 = a0, a3 = a0
            for seg in segments {
                let a = max(lo, seg.start), b = min(visible, seg.start + seg.count)
                if a >= b { continue }
                var v = UnsafePointer(seg.values + (a - seg.start) * kvStride + offset + c)
                if l3 == 16 {
                    for p in a..<b {
                        let w = scores[p - lo]
                        a0 = fma16(w, load16(v, 0, 16), a0)
                        a1 = fma16(w, load16(v, 16, 16), a1)
                        a2 = fma16(w, load16(v, 32, 16), a2)
                        a3 = fma16(w, load16(v, 48, 16), a3)
                        v += kvStride
                    }
                } else {
                    for p in a..<b {
                        let w = scores[p - lo]
                        a0 = fma16(w, load16(v, 0, l0), a0)
                        if l1 > 0 { a1 = fma16(w, load16(v, 16, l1), a1) }
                        if l2 > 0 { a2 = fma16(w, load16(v, 32, l2), a2) }
                        if l3 > 0 { a3 = fma16(w, load16(v, 48, l3), a3) }
                        v += kvStride
                    }
                }
            }
            store16(a0, out, c, l0)
            if l1 > 0 { store16(a1, out, c + 16, l1) }
            if l2 > 0 { store16(a2, out, c + 32, l2) }
            if l3 > 0 { store16(a3, out, c + 48, l3) }
            c += 64
        }
    }
}
