#if canImport(Glibc)
import Glibc
#endif

/// Attention of MANY query vectors over ONE run of keys/values of one kv head — the
/// shared prefix of Hydragen, where every row of every sequence sharing the run, and
/// every query head of the kv head's GQA group, reads the same positions — as real
/// matrix-matrix products with an online (flash-style) softmax, so the scores never
/// leave L1/L2 whatever the run's length:
///
///     for each tile of `prefixTile` positions a..<b of from..<to (cut at absolute
///     multiples of the tile: the cuts never depend on who asks):
///         Kᵀ  [hd × T]   = the tile's keys, transposed into scratch (zero columns past b)
///         Vp  [T × hdp]  = the tile's values, copied into scratch (hdp = hd rounded up to 16)
///         S   [M × T]    = scale · Q·Kᵀ          (M = rows · heads query vectors; register
///                                                  blocks of 6 vectors × 16 positions)
///         for each vector j (positions outside its lo..<visible masked out):
///             m' = max(m_j, max_p S[j][p]),  α = e^(m_j − m'),  P[j][p] = e^(S[j][p] − m')
///             l_j = α · l_j + Σ_p P[j][p],   O_j = α · O_j,    m_j = m'
///         O   [M × hdp] += P · Vp                 (register blocks of 6 vectors × 16 lanes)
///     out_j = O_j / l_j,   stats_j = (m_j, m_j + log l_j)
///
/// which is softmax(scale · q·Kᵀ) · V over the vector's positions in from..<to, exact in
/// real arithmetic, with the statistics `Attention.mergePartial` combines with the
/// vector's other parts (its own suffix, other splits) by log-sum-exp.
///
/// Determinism: every value of vector j is a function of its own query, its own range
/// and the tiles' keys/values only — a score is one FMA chain over c = 0..<hd in order,
/// each P·V sum a chain over ascending positions, the softmax statistics are its own —
/// so the bits do not depend on which other vectors share the call, on the register
/// blocking, or on the thread. They differ from `Attention.group`'s in the last bits
/// (another summation order), within float rounding (tested against float64).
extension Attention {
    /// Positions per key/value tile of `prefixTiled`: Kᵀ and Vp (T · hd floats each, 16 KB
    /// at hd 64) stay in L1 while every vector of the call reads them.
    package static let prefixTile = 64

    /// Scratch floats `prefixTiled` needs for `vectors` query vectors (rows · heads) of
    /// head dimension hd: Kᵀ, Vp, S, O, and two statistics per vector.
    package static func prefixScratch(vectors: Int, headDim hd: Int) -> Int {
        let hdp = (hd + 15) / 16 * 16, t = prefixTile
        return hd * t + t * hdp + vectors * (t + hdp + 2)
    }

    /// Shared-prefix attention of `queries` (each `heads` heads at q + h·hd; positions
    /// lo..<visible) over positions from..<to of `kv` only — each query's range is cut to
    /// it — at `offset` of each row (one kv head), every key/value tile read once for all
    /// of them. Writes each query's normalized heads to out + h·hd and, when it has
    /// `stats`, head h's max scaled score to stats[2h] and its log-sum-exp to
    /// stats[2h + 1]; a query with no position in from..<to gets zeros and −∞ statistics
    /// (`mergePartial` then ignores it). `scratch`: `prefixScratch(queries.count · heads, hd)`
    /// floats.
    package static func prefixTiled(_ queries: UnsafeBufferPointer<AttentionQuery>, heads: Int, kv: KVView,
                                     offset: Int, headDim hd: Int, from: Int, to: Int, scale: Float,
                                     scratch: UnsafeMutablePointer<Float>) {
        let t = prefixTile, hdp = (hd + 15) / 16 * 16, m = queries.count * heads, kvStride = kv.rowStride
        guard m > 0, hd > 0 else { return }
        let kt = scratch, vp = kt + hd * t, s = vp + t * hdp, o = s + m * t, mx = o + m * hdp, l = mx + m
        o.update(repeating: 0, count: m * hdp)
        mx.update(repeating: -.infinity, count: m)
        l.update(repeating: 0, count: m)
        var lo = Int.max, hi = Int.min
        for r in queries {
            let a = max(r.lo, from), b = min(r.visible, to)
            if a < b {
                lo = min(lo, a)
                hi = max(hi, b)
            }
        }
        withUnsafeTemporaryAllocation(of: UnsafePointer<Float>.self, capacity: m) { qp in
            for (i, r) in queries.enumerated() {
                for h in 0..<heads { qp.initializeElement(at: i * heads + h, to: r.q + h * hd) }
            }
            guard lo < hi else { return }
            let q = UnsafeBufferPointer(qp)
            forEachTile(kv, lo: lo, hi: hi, tile: t) { seg, a, b, next in
                let n = b - a, n16 = (n + 15) / 16 * 16
                // Kᵀ and Vp of the tile (zero past the tile's positions and lanes).
                var k = seg.keys + (a - seg.start) * kvStride + offset
                var v = seg.values + (a - seg.start) * kvStride + offset
                for p in 0..<n {
                    for c in 0..<hd { kt[c * t + p] = k[c] }
                    (vp + p * hdp).update(from: v, count: hd)
                    if hdp > hd { (vp + p * hdp + hd).update(repeating: 0, count: hdp - hd) }
                    k += kvStride
                    v += kvStride
                }
                if n < n16 { for c in 0..<hd { (kt + c * t + n).update(repeating: 0, count: n16 - n) } }
                if let next { prefetchTile(seg.keys, seg.start, kvStride, offset, hd, next) }
                // S = scale · Q·Kᵀ.
                var j = 0
                while j < m {
                    let r = min(6, m - j)
                    var p = 0
                    while p < n16 {
                        scores6x16(q, j, r, kt + p, t, hd, scale, s + j * t + p, t)
                        p += 16
                    }
                    j += r
                }
                if let next { prefetchTile(seg.values, seg.start, kvStride, offset, hd, next) }
                // Online softmax per vector; P over the tile's positions (zero outside its range).
                for (i, r) in queries.enumerated() {
                    let ra = max(a, max(r.lo, from)) - a, rb = min(b, min(r.visible, to)) - a
                    for h in 0..<heads {
                        let jv = i * heads + h, row = s + jv * t
                        guard ra < rb else {
                            row.update(repeating: 0, count: n)
                            continue
                        }
                        if ra > 0 { row.update(repeating: 0, count: ra) }
                        if rb < n { (row + rb).update(repeating: 0, count: n - rb) }
                        onlineSoftmax(row + ra, rb - ra, max: mx + jv, sum: l + jv, o + jv * hdp, hdp)
                    }
                }
                // O += P·Vp.
                j = 0
                while j < m {
                    let r = min(6, m - j)
                    var c = 0
                    while c < hdp {
                        values6x16(s + j * t, t, r, n, vp + c, hdp, o + j * hdp + c, hdp)
                        c += 16
                    }
                    j += r
                }
            }
        }
        // out = O / l, statistics.
        for (i, r) in queries.enumerated() {
            for h in 0..<heads {
                let jv = i * heads + h, dst = r.out + h * hd
                if l[jv] > 0 {
                    let inv = 1 / l[jv], src = o + jv * hdp
                    forEachBlock16(hd) { c, lanes in store16(load16(src, c, lanes) * inv, dst, c, lanes) }
                    r.stats?[2 * h] = mx[jv]
                    r.stats?[2 * h + 1] = mx[jv] + log(l[jv])
                } else {
                    dst.update(repeating: 0, count: hd)
                    r.stats?[2 * h] = -.infinity
                    r.stats?[2 * h + 1] = -.infinity
                }
            }
        }
    }

    /// One step of the online softmax for one vector: `row` (n ≥ 1 scaled scores of the
    /// tile's positions it reads) becomes P = e^(row − m') in place, where m' = max(m,
    /// max row); sum = α · sum + Σ P and its accumulator o (hdp floats) is scaled by
    /// α = e^(m − m') (0 when m was −∞: nothing accumulated yet); m = m'.
    @inline(__always)
    static func onlineSoftmax(_ row: UnsafeMutablePointer<Float>, _ n: Int, max mx: UnsafeMutablePointer<Float>,
                              sum: UnsafeMutablePointer<Float>, _ o: UnsafeMutablePointer<Float>, _ hdp: Int) {
        var mv = Vec16(repeating: -.infinity)
        var i = 0
        while i + 16 <= n {
            mv = pointwiseMax(mv, load16(row, i, 16))
            i += 16
        }
        var tileMax = mv.max()
        while i < n {
            tileMax = Swift.max(tileMax, row[i])
            i += 1
        }
        let old = mx.pointee, new = Swift.max(old, tileMax)
        var acc = Vec16(repeating: 0)
        i = 0
        while i < n {
            let lanes = min(16, n - i)
            var e = exp16(load16(row, i, lanes) - new)
            if lanes < 16 { for k in lanes..<16 { e[k] = 0 } }
            store16(e, row, i, lanes)
            acc += e
            i += lanes
        }
        let tileSum = acc.sum()
        if old == -.infinity {
            sum.pointee = tileSum
        } else if new > old {
            let alpha = exp(old - new)
            sum.pointee = sum.pointee * alpha + tileSum
            var c = 0
            while c < hdp {
                store16(load16(o, c, 16) * alpha, o, c, 16)
                c += 16
            }
        } else {
            sum.pointee += tileSum
        }
        mx.pointee = new
    }

    /// s[i][0..<16] = scale · Σ_c q[j + i][c] · kt[c][0..<16] for i < r (≤ 6): one FMA
    /// chain per value over c ascending. kt: 16 positions of a transposed tile, rows
    /// `ldk` floats apart; s: rows `lds` apart. Vectors past r repeat vector j (dropped).
    @inline(__always)
    static func scores6x16(_ q: UnsafeBufferPointer<UnsafePointer<Float>>, _ j: Int, _ r: Int,
                           _ kt: UnsafePointer<Float>, _ ldk: Int, _ hd: Int, _ scale: Float,
                           _ s: UnsafeMutablePointer<Float>, _ lds: Int) {
        let x0 = q[j], x1 = q[j + min(1, r - 1)], x2 = q[j + min(2, r - 1)]
        let x3 = q[j + min(3, r - 1)], x4 = q[j + min(4, r - 1)], x5 = q[j + min(5, r - 1)]
        var b = kt
        var c00 = Vec8(), c01 = Vec8(), c10 = Vec8(), c11 = Vec8(), c20 = Vec8(), c21 = Vec8()
        var c30 = Vec8(), c31 = Vec8(), c40 = Vec8(), c41 = Vec8(), c50 = Vec8(), c51 = Vec8()
        for c in 0..<hd {
            let b0 = UnsafeRawPointer(b).loadUnaligned(as: Vec8.self)
            let b1 = UnsafeRawPointer(b + 8).loadUnaligned(as: Vec8.self)
            var a = Vec8(repeating: x0[c])
            c00 = c00.addingProduct(a, b0); c01 = c01.addingProduct(a, b1)
            a = Vec8(repeating: x1[c])
            c10 = c10.addingProduct(a, b0); c11 = c11.addingProduct(a, b1)
            a = Vec8(repeating: x2[c])
            c20 = c20.addingProduct(a, b0); c21 = c21.addingProduct(a, b1)
            a = Vec8(repeating: x3[c])
            c30 = c30.addingProduct(a, b0); c31 = c31.addingProduct(a, b1)
            a = Vec8(repeating: x4[c])
            c40 = c40.addingProduct(a, b0); c41 = c41.addingProduct(a, b1)
            a = Vec8(repeating: x5[c])
            c50 = c50.addingProduct(a, b0); c51 = c51.addingProduct(a, b1)
            b += ldk
        }
        let sc = Vec8(repeating: scale)
        store8x2(c00 * sc, c01 * sc, s)
        if r > 1 { store8x2(c10 * sc, c11 * sc, s + lds) }
        if r > 2 { store8x2(c20 * sc, c21 * sc, s + 2 * lds) }
        if r > 3 { store8x2(c30 * sc, c31 * sc, s + 3 * lds) }
        if r > 4 { store8x2(c40 * sc, c41 * sc, s + 4 * lds) }
        if r > 5 { store8x2(c50 * sc, c51 * sc, s + 5 * lds) }
    }

    /// o[i][0..<16] += Σ_{p < n} w[i][p] · v[p][0..<16] for i < r (≤ 6): each sum a chain
    /// of FMAs over ascending p, starting from o's value. w: rows `ldw` apart; v: rows
    /// `ldv` apart; o: rows `ldo` apart. Vectors past r repeat vector 0 (not stored).
    @inline(__always)
    static func values6x16(_ w: UnsafePointer<Float>, _ ldw: Int, _ r: Int, _ n: Int,
                           _ v: UnsafePointer<Float>, _ ldv: Int, _ o: UnsafeMutablePointer<Float>, _ ldo: Int) {
        let w0 = w, w1 = w + min(1, r - 1) * ldw, w2 = w + min(2, r - 1) * ldw
        let w3 = w + min(3, r - 1) * ldw, w4 = w + min(4, r - 1) * ldw, w5 = w + min(5, r - 1) * ldw
        let o0 = o, o1 = o + min(1, r - 1) * ldo, o2 = o + min(2, r - 1) * ldo
        let o3 = o + min(3, r - 1) * ldo, o4 = o + min(4, r - 1) * ldo, o5 = o + min(5, r - 1) * ldo
        var c00 = load8(o0), c01 = load8(o0 + 8), c10 = load8(o1), c11 = load8(o1 + 8)
        var c20 = load8(o2), c21 = load8(o2 + 8), c30 = load8(o3), c31 = load8(o3 + 8)
        var c40 = load8(o4), c41 = load8(o4 + 8), c50 = load8(o5), c51 = load8(o5 + 8)
        var b = v
        for p in 0..<n {
            let b0 = UnsafeRawPointer(b).loadUnaligned(as: Vec8.self)
            let b1 = UnsafeRawPointer(b + 8).loadUnaligned(as: Vec8.self)
            var a = Vec8(repeating: w0[p])
            c00 = c00.addingProduct(a, b0); c01 = c01.addingProduct(a, b1)
            a = Vec8(repeating: w1[p])
            c10 = c10.addingProduct(a, b0); c11 = c11.addingProduct(a, b1)
            a = Vec8(repeating: w2[p])
            c20 = c20.addingProduct(a, b0); c21 = c21.addingProduct(a, b1)
            a = Vec8(repeating: w3[p])
            c30 = c30.addingProduct(a, b0); c31 = c31.addingProduct(a, b1)
            a = Vec8(repeating: w4[p])
            c40 = c40.addingProduct(a, b0); c41 = c41.addingProduct(a, b1)
            a = Vec8(repeating: w5[p])
            c50 = c50.addingProduct(a, b0); c51 = c51.addingProduct(a, b1)
            b += ldv
        }
        store8x2(c00, c01, o0)
        if r > 1 { store8x2(c10, c11, o1) }
        if r > 2 { store8x2(c20, c21, o2) }
        if r > 3 { store8x2(c30, c31, o3) }
        if r > 4 { store8x2(c40, c41, o4) }
        if r > 5 { store8x2(c50, c51, o5) }
    }

    @inline(__always)
    static func store8x2(_ lo: Vec8, _ hi: Vec8, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: lo, as: Vec8.self)
        UnsafeMutableRawPointer(p + 8).storeBytes(of: hi, as: Vec8.self)
    }
}
