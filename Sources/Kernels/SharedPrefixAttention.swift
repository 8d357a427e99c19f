#if canImport(Glibc)
import Glibc
#endif
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Attention of MANY query vectors over ONE run of keys/values of one kv head — the
/// shared prefix of Hydragen, where every row of every sequence sharing the run, and
/// every query head of the kv head's GQA group, reads the same positions — as real
/// matrix-matrix products with an online (flash-style) softmax, so the scores never
/// leave L1/L2 whatever the run's length. With M = rows · heads query vectors (padded to
/// Mp, a multiple of 16, with empty vectors):
///
///     Qᵀ [hd × Mp] = the queries, transposed once per call (vectors along the lanes)
///     for each tile of `prefixTile` positions a..<b of from..<to (cut at absolute
///     multiples of the tile: the cuts never depend on who asks), for each chunk of 16
///     vectors that reads any of the tile:
///         Sᵀ [T × 16]  = scale · K·Qᵀ        (register blocks of 6 positions × 16 vectors;
///                                             K's scalars broadcast from the cache rows)
///         positions outside a vector's lo..<visible: −∞
///         m' = max(m, max_p Sᵀ[p]),  α = e^(m − m'),  Pᵀ[p] = e^(Sᵀ[p] − m')
///         l = α · l + Σ_p Pᵀ[p],  Oᵀ = α · Oᵀ,  m = m'             (lane-wise, 16 vectors)
///         Oᵀ [hd × 16] += Vᵀ · Pᵀ             (register blocks of 6 dims × 16 vectors)
///     out_j = Oᵀ[·][j] / l_j,   stats_j = (m_j, m_j + log l_j)
///
/// which is softmax(scale · q·Kᵀ) · V over the vector's positions in from..<to, exact in
/// real arithmetic, with the statistics `Attention.mergePartial` combines with the
/// vector's other parts (its own suffix, other splits) by log-sum-exp.
///
/// Determinism: every value of vector j is a function of its own query, its own range
/// and the tiles' keys/values only — a score is one FMA chain over c = 0..<hd in order,
/// each P·V sum a chain over ascending positions, the softmax statistics are its own
/// lane's — so the bits do not depend on which other vectors share the call, on the
/// register blocking, or on the thread. They differ from `Attention.group`'s in the last
/// bits (another summation order), within float rounding (tested against float64).
extension Attention {
    /// Positions per key/value tile of `prefixTiled`: a tile's keys and values of one kv
    /// head (T · hd floats each, 16 KB at hd 64) stay in L1/L2 while every vector reads them.
    package static let prefixTile = 64

    /// Scratch floats `prefixTiled` needs for `vectors` query vectors (rows · heads) of
    /// head dimension hd: Qᵀ, Oᵀ, Sᵀ and three statistics per vector (padded to 16).
    package static func prefixScratch(vectors: Int, headDim hd: Int) -> Int {
        let mp = (vectors + 15) / 16 * 16
        return mp * (2 * hd + prefixTile + 3)
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
        let t = prefixTile, m = queries.count * heads, mp = (m + 15) / 16 * 16, kvStride = kv.rowStride
        guard m > 0, hd > 0 else { return }
        let qt = scratch, ot = qt + hd * mp, st = ot + hd * mp, mx = st + t * mp, l = mx + mp
        ot.update(repeating: 0, count: hd * mp)
        mx.update(repeating: -.infinity, count: mp)
        l.update(repeating: 0, count: mp)
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 2 * mp) { ranges in
            // Vector j = (query i, head h) reads vlo[j]..<vhi[j]; padding vectors nothing.
            let vlo = ranges.baseAddress!, vhi = vlo + mp
            var lo = Int.max, hi = Int.min
            for (i, r) in queries.enumerated() {
                let a = max(r.lo, from), b = min(r.visible, to)
                if a < b {
                    lo = min(lo, a)
                    hi = max(hi, b)
                }
                for h in 0..<heads {
                    let j = i * heads + h, q = r.q + h * hd
                    vlo[j] = a
                    vhi[j] = max(a, b)
                    for c in 0..<hd { qt[c * mp + j] = q[c] }
                }
            }
            for j in m..<mp {
                vlo[j] = 0
                vhi[j] = 0
                for c in 0..<hd { qt[c * mp + j] = 0 }
            }
            guard lo < hi else { return }
            forEachTile(kv, lo: lo, hi: hi, tile: t) { seg, a, b, next in
                let n = b - a
                let k = UnsafePointer(seg.keys + (a - seg.start) * kvStride + offset)
                let v = UnsafePointer(seg.values + (a - seg.start) * kvStride + offset)
                if let next {
                    prefetchTile(seg.keys, seg.start, kvStride, offset, hd, next)
                    prefetchTile(seg.values, seg.start, kvStride, offset, hd, next)
                }
                var j0 = 0
                while j0 < mp {
                    defer { j0 += 16 }
                    // Which vectors of the chunk read the tile, and whether all read all of it.
                    var any = false, full = true
                    for j in j0..<(j0 + 16) {
                        if vlo[j] < vhi[j] {
                            let ra = max(a, vlo[j]), rb = min(b, vhi[j])
                            if ra < rb { any = true }
                            if ra > a || rb < b { full = false }
                        } else if j < m {
                            full = false  // a query reading nothing: masked (padding lanes are dropped)
                        }
                    }
                    guard any else { continue }
                    // Sᵀ = scale · K·Qᵀ.
                    var p = 0
                    while p < n {
                        let r = min(6, n - p)
                        scores6x16(k + p * kvStride, kvStride, r, qt + j0, mp, hd, scale, st + p * mp + j0, mp)
                        p += r
                    }
                    if !full {
                        for j in j0..<(j0 + 16) {
                            let ra = min(b, max(a, vlo[j])), rb = max(ra, min(b, vhi[j]))
                            for p in 0..<(ra - a) { st[p * mp + j] = -.infinity }
                            for p in (rb - a)..<n { st[p * mp + j] = -.infinity }
                        }
                    }
                    onlineSoftmax16(st + j0, mp, n, max: mx + j0, sum: l + j0, ot + j0, mp, hd)
                    // Oᵀ += Vᵀ·Pᵀ.
                    var c = 0
                    while c < hd {
                        let r = min(6, hd - c)
                        values6x16(st + j0, mp, n, v + c, kvStride, r, ot + c * mp + j0, mp)
                        c += r
                    }
                }
            }
        }
        // out = Oᵀ / l, statistics.
        for (i, r) in queries.enumerated() {
            for h in 0..<heads {
                let j = i * heads + h, dst = r.out + h * hd
                if l[j] > 0 {
                    let inv = 1 / l[j]
                    for c in 0..<hd { dst[c] = ot[c * mp + j] * inv }
                    r.stats?[2 * h] = mx[j]
                    r.stats?[2 * h + 1] = mx[j] + log(l[j])
                } else {
                    dst.update(repeating: 0, count: hd)
                    r.stats?[2 * h] = -.infinity
                    r.stats?[2 * h + 1] = -.infinity
                }
            }
        }
    }

    /// Lane-wise maximum (one vmaxps per 8 lanes; the generic `pointwiseMax` goes lane by
    /// lane through memory). No NaN reaches it here.
    @inline(__always)
    static func max16(_ x: Vec16, _ y: Vec16) -> Vec16 {
        #if arch(x86_64)
        return Vec16(lowHalf: _mm256_max_ps(x.lowHalf, y.lowHalf), highHalf: _mm256_max_ps(x.highHalf, y.highHalf))
        #else
        return x.replacing(with: y, where: y .> x)
        #endif
    }

    /// One step of the online softmax for 16 vectors (lanes): `s` holds n rows of their
    /// scaled scores (−∞: a position the vector does not read), rows `lds` apart; they
    /// become P = e^(s − m') where m' = max(m, max over the rows); sum = α · sum + Σ P
    /// (over the rows in order) and the accumulators o (hd rows `ldo` apart) are scaled
    /// by α = e^(m − m'); m = m'. A lane with m' = −∞ (nothing read yet) keeps P = 0, α = 1.
    @inline(__always)
    static func onlineSoftmax16(_ s: UnsafeMutablePointer<Float>, _ lds: Int, _ n: Int,
                                max mx: UnsafeMutablePointer<Float>, sum: UnsafeMutablePointer<Float>,
                                _ o: UnsafeMutablePointer<Float>, _ ldo: Int, _ hd: Int) {
        let old = load16(mx, 0, 16)
        var new = old
        for p in 0..<n { new = max16(new, load16(s + p * lds, 0, 16)) }
        let dead = new .== -Float.infinity
        let base = new.replacing(with: 0, where: dead)
        let alpha = exp16(old - base).replacing(with: 1, where: dead)
        var acc = Vec16(repeating: 0)
        for p in 0..<n {
            let e = exp16(load16(s + p * lds, 0, 16) - base)
            store16(e, s + p * lds, 0, 16)
            acc += e
        }
        store16(fma16(load16(sum, 0, 16), alpha, acc), sum, 0, 16)
        store16(new, mx, 0, 16)
        if alpha != Vec16(repeating: 1) {
            for c in 0..<hd { store16(load16(o + c * ldo, 0, 16) * alpha, o + c * ldo, 0, 16) }
        }
    }

    /// s[i][0..<16] = scale · Σ_c k_i[c] · qt[c][0..<16] for positions i < r (≤ 6): one FMA
    /// chain per value over c ascending. k: the first position's key (hd floats), the
    /// next ones `ldk` apart; qt: 16 vectors' columns of Qᵀ, rows `ldq` apart; s: rows
    /// `lds` apart. Positions past r repeat position 0 (dropped).
    @inline(__always)
    static func scores6x16(_ k: UnsafePointer<Float>, _ ldk: Int, _ r: Int, _ qt: UnsafePointer<Float>, _ ldq: Int,
                           _ hd: Int, _ scale: Float, _ s: UnsafeMutablePointer<Float>, _ lds: Int) {
        let k0 = k, k1 = k + min(1, r - 1) * ldk, k2 = k + min(2, r - 1) * ldk
        let k3 = k + min(3, r - 1) * ldk, k4 = k + min(4, r - 1) * ldk, k5 = k + min(5, r - 1) * ldk
        var b = qt
        var c00 = Vec8(), c01 = Vec8(), c10 = Vec8(), c11 = Vec8(), c20 = Vec8(), c21 = Vec8()
        var c30 = Vec8(), c31 = Vec8(), c40 = Vec8(), c41 = Vec8(), c50 = Vec8(), c51 = Vec8()
        for c in 0..<hd {
            let b0 = UnsafeRawPointer(b).loadUnaligned(as: Vec8.self)
            let b1 = UnsafeRawPointer(b + 8).loadUnaligned(as: Vec8.self)
            var x = Vec8(repeating: k0[c])
            c00 = c00.addingProduct(x, b0); c01 = c01.addingProduct(x, b1)
            x = Vec8(repeating: k1[c])
            c10 = c10.addingProduct(x, b0); c11 = c11.addingProduct(x, b1)
            x = Vec8(repeating: k2[c])
            c20 = c20.addingProduct(x, b0); c21 = c21.addingProduct(x, b1)
            x = Vec8(repeating: k3[c])
            c30 = c30.addingProduct(x, b0); c31 = c31.addingProduct(x, b1)
            x = Vec8(repeating: k4[c])
            c40 = c40.addingProduct(x, b0); c41 = c41.addingProduct(x, b1)
            x = Vec8(repeating: k5[c])
            c50 = c50.addingProduct(x, b0); c51 = c51.addingProduct(x, b1)
            b += ldq
        }
        let sc = Vec8(repeating: scale)
        store8x2(c00 * sc, c01 * sc, s)
        if r > 1 { store8x2(c10 * sc, c11 * sc, s + lds) }
        if r > 2 { store8x2(c20 * sc, c21 * sc, s + 2 * lds) }
        if r > 3 { store8x2(c30 * sc, c31 * sc, s + 3 * lds) }
        if r > 4 { store8x2(c40 * sc, c41 * sc, s + 4 * lds) }
        if r > 5 { store8x2(c50 * sc, c51 * sc, s + 5 * lds) }
    }

    /// o[i][0..<16] += Σ_{p < n} v_p[i] · w[p][0..<16] for dims i < r (≤ 6): each sum a
    /// chain of FMAs over ascending p, starting from o's value. w: n rows of 16 vectors'
    /// weights, `ldw` apart; v: the first position's values at the first dim, positions
    /// `ldv` apart; o: rows `ldo` apart. Dims past r repeat dim 0 (not stored).
    @inline(__always)
    static func values6x16(_ w: UnsafePointer<Float>, _ ldw: Int, _ n: Int, _ v: UnsafePointer<Float>, _ ldv: Int,
                           _ r: Int, _ o: UnsafeMutablePointer<Float>, _ ldo: Int) {
        let i1 = min(1, r - 1), i2 = min(2, r - 1), i3 = min(3, r - 1), i4 = min(4, r - 1), i5 = min(5, r - 1)
        let o0 = o, o1 = o + i1 * ldo, o2 = o + i2 * ldo, o3 = o + i3 * ldo, o4 = o + i4 * ldo, o5 = o + i5 * ldo
        var c00 = load8x(o0), c01 = load8x(o0 + 8), c10 = load8x(o1), c11 = load8x(o1 + 8)
        var c20 = load8x(o2), c21 = load8x(o2 + 8), c30 = load8x(o3), c31 = load8x(o3 + 8)
        var c40 = load8x(o4), c41 = load8x(o4 + 8), c50 = load8x(o5), c51 = load8x(o5 + 8)
        var a = w, x = v
        for _ in 0..<n {
            let b0 = UnsafeRawPointer(a).loadUnaligned(as: Vec8.self)
            let b1 = UnsafeRawPointer(a + 8).loadUnaligned(as: Vec8.self)
            var y = Vec8(repeating: x[0])
            c00 = c00.addingProduct(y, b0); c01 = c01.addingProduct(y, b1)
            y = Vec8(repeating: x[i1])
            c10 = c10.addingProduct(y, b0); c11 = c11.addingProduct(y, b1)
            y = Vec8(repeating: x[i2])
            c20 = c20.addingProduct(y, b0); c21 = c21.addingProduct(y, b1)
            y = Vec8(repeating: x[i3])
            c30 = c30.addingProduct(y, b0); c31 = c31.addingProduct(y, b1)
            y = Vec8(repeating: x[i4])
            c40 = c40.addingProduct(y, b0); c41 = c41.addingProduct(y, b1)
            y = Vec8(repeating: x[i5])
            c50 = c50.addingProduct(y, b0); c51 = c51.addingProduct(y, b1)
            a += ldw
            x += ldv
        }
        store8x2(c00, c01, o0)
        if r > 1 { store8x2(c10, c11, o1) }
        if r > 2 { store8x2(c20, c21, o2) }
        if r > 3 { store8x2(c30, c31, o3) }
        if r > 4 { store8x2(c40, c41, o4) }
        if r > 5 { store8x2(c50, c51, o5) }
    }

    @inline(__always)
    static func load8x(_ p: UnsafeMutablePointer<Float>) -> Vec8 {
        UnsafeRawPointer(p).loadUnaligned(as: Vec8.self)
    }

    @inline(__always)
    static func store8x2(_ lo: Vec8, _ hi: Vec8, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: lo, as: Vec8.self)
        UnsafeMutableRawPointer(p + 8).storeBytes(of: hi, as: Vec8.self)
    }
}
