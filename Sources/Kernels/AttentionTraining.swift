import BCCore
#if canImport(Glibc)
import Glibc
#endif

/// Causal grouped-query attention of a training micro-batch, forward and backward, over
/// the batch's own keys/values (no cache). Buffers (T = batch rows, hd = head dim,
/// H = query heads, G = kv heads, H % G == 0, query head h reads kv head h / (H/G),
/// d = H·hd, kvd = G·hd, S = d + 2·kvd):
///
/// - `qkv` [T × S]: row i holds q (H heads, column h·hd), k (column d + g·hd) and
///   v (column d + kvd + g·hd) of batch row i, after RoPE — the projection's output.
/// - `documents`: lengths of the documents packed back to back in the batch (sum T);
///   positions restart at 0 in each document and a row attends to its document's rows
///   0...position only (never across a document).
/// - `out` [T × d]: row i's attention output, head h at column h·hd.
/// - `stats` [T × H × 2]: per (row, head) the softmax statistics of the scaled scores
///   s_j = scale·q·k_j: (max_j s_j, logSumExp = log Σ_j exp s_j).
/// - `dOut` [T × d], `dqkv` [T × S]: the gradient of `out`, and the gradient of qkv that
///   backward writes (overwrites) in the qkv layout.
///
/// The forward of each (row, kv head) is `Attention.group`'s arithmetic exactly (same
/// scores, softmax and P·V, so the output is bit-identical to the serving path's) plus
/// the statistics, run as `Attention.rows` over blocks of a document's rows. Backward recomputes P_j = exp(s_j − logSumExp) from the same scores and
///
///     dP_j = dO·v_j,  D = Σ_j P_j·dP_j,  dS_j = P_j·(dP_j − D)
///     dq   = scale · Σ_j dS_j·k_j,  dk_j += scale · dS_j·q,  dv_j += P_j·dO
///
/// Both are deterministic: forward items are (row, kv head), each writing its own output;
/// backward items are (document, kv head), each owning that document's dK/dV rows of the
/// kv head and the dQ of its query heads, accumulating rows in ascending order and the
/// group's heads in ascending order — the same bits whatever the thread count.
package enum AttentionTraining {
    /// Checks the shapes; returns the (first row, count) of each document.
    static func layout(rows: Int, documents: [Int], heads: Int, kvHeads: Int, headDim: Int) throws -> [(first: Int, count: Int)] {
        guard heads > 0, kvHeads > 0, headDim > 0, heads % kvHeads == 0 else {
            throw BatchCoreError.invalid("attention: \(heads) query heads, \(kvHeads) kv heads, head dim \(headDim)")
        }
        // Every index below stays inside rows · (d + 2·kvd) and rows · heads · 2.
        let (d, o1) = heads.multipliedReportingOverflow(by: headDim)
        let (kvd2, o2) = (2 * kvHeads).multipliedReportingOverflow(by: headDim)
        let (stride, o3) = d.addingReportingOverflow(kvd2)
        let (_, o4) = rows.multipliedReportingOverflow(by: max(stride, 2 * heads))
        guard rows >= 0, !o1, !o2, !o3, !o4, kvHeads <= Int.max / 2 else {
            throw BatchCoreError.invalid("attention: \(rows) rows of \(heads) heads × \(headDim) are too large")
        }
        var docs: [(first: Int, count: Int)] = []
        var first = 0
        for (k, n) in documents.enumerated() {
            guard n > 0, n <= rows - first else {
                throw BatchCoreError.invalid("attention: document \(k) has \(n) rows; \(rows - first) of the batch's \(rows) remain")
            }
            docs.append((first, n))
            first += n
        }
        guard first == rows else { throw BatchCoreError.invalid("attention: documents hold \(first) rows, the batch \(rows)") }
        return docs
    }

    // MARK: Forward

    /// out and stats of every row (see the type's doc for the buffers).
    package static func forward(qkv: UnsafePointer<Float>, rows: Int, documents: [Int], heads: Int, kvHeads: Int,
                                headDim hd: Int, out: UnsafeMutablePointer<Float>, stats: UnsafeMutablePointer<Float>) throws {
        let docs = try layout(rows: rows, documents: documents, heads: heads, kvHeads: kvHeads, headDim: hd)
        let d = heads * hd, kvd = kvHeads * hd, stride = d + 2 * kvd, group = heads / kvHeads
        let scale = 1 / Float(hd).squareRoot()
        var views: [KVView] = []
        // Blocks of up to 16 consecutive rows of one document (Attention.rows reads each
        // key/value tile once per block); any cut gives the same bits.
        var blocks: [(doc: Int, first: Int, count: Int)] = []
        for (k, doc) in docs.enumerated() {
            let keys = qkv + doc.first * stride + d
            views.append(KVView(segments: [KVSegment(keys: keys, values: keys + kvd, start: 0, count: doc.count)],
                                rowStride: stride))
            var p = 0
            while p < doc.count {
                let n = min(doc.count - p, max(1, min(16, (1 << 18) / (group * (p + 16)))))
                blocks.append((k, p, n))
                p += n
            }
        }
        // Latest blocks (the most positions) first.
        Parallel.forEach(blocks.count * kvHeads) { item in
            let block = blocks[blocks.count - 1 - item / kvHeads], g = item % kvHeads
            let row0 = docs[block.doc].first + block.first
            withUnsafeTemporaryAllocation(of: AttentionQuery.self, capacity: block.count) { queries in
                for k in 0..<block.count {
                    let i = row0 + k
                    queries.initializeElement(at: k, to: AttentionQuery(
                        q: qkv + i * stride + g * group * hd, out: out + i * d + g * group * hd,
                        lo: 0, visible: block.first + k + 1, stats: stats + (i * heads + g * group) * 2))
                }
                let qs = UnsafeBufferPointer(queries)
                withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, Attention.tiledScratch(qs, heads: group))) {
                    Attention.rows(qs, heads: group, kv: views[block.doc], offset: g * hd, headDim: hd, scale: scale,
                                   scores: $0.baseAddress!)
                }
            }
        }
    }

    // MARK: Backward

    /// dqkv from dOut, recomputing the probabilities from qkv and stats (see the type's doc).
    package static func backward(qkv: UnsafePointer<Float>, rows: Int, documents: [Int], heads: Int, kvHeads: Int,
                                 headDim hd: Int, stats: UnsafePointer<Float>, dOut: UnsafePointer<Float>,
                                 dqkv: UnsafeMutablePointer<Float>) throws {
        let docs = try layout(rows: rows, documents: documents, heads: heads, kvHeads: kvHeads, headDim: hd)
        let d = heads * hd, kvd = kvHeads * hd, stride = d + 2 * kvd, group = heads / kvHeads
        let scale = 1 / Float(hd).squareRoot()
        Parallel.forEach(docs.count * kvHeads) { item in
            let doc = docs[item / kvHeads], g = item % kvHeads, n = doc.count
            let base = qkv + doc.first * stride, dBase = dqkv + doc.first * stride
            let kOff = d + g * hd, vOff = d + kvd + g * hd
            for r in 0..<n {
                (dBase + r * stride + kOff).update(repeating: 0, count: hd)
                (dBase + r * stride + vOff).update(repeating: 0, count: hd)
            }
            let block = min(n, backwardRowBlock)
            // P and dS·scale of a block of rows: row r − r0 at (r − r0)·n, positions 0..<r1
            // (0 past r: those positions are masked and add nothing below).
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * block * n) { buf in
                let pBuf = buf.baseAddress!, sBuf = pBuf + block * n
                for hh in 0..<group {
                    let h = g * group + hh
                    var r0 = 0
                    while r0 < n {
                        let r1 = min(n, r0 + block)
                        for r in r0..<r1 {
                            let cnt = r + 1, row = doc.first + r
                            let p = pBuf + (r - r0) * n, ds = sBuf + (r - r0) * n
                            let q = base + r * stride + h * hd, dO = dOut + row * d + h * hd
                            let lse = stats[(row * heads + h) * 2 + 1]
                            // Scores (the forward's arithmetic), then P_j = exp(s_j − lse).
                            Attention.scores(q, base + kOff, stride, cnt, hd, scale, p)
                            // dP_j = dO·v_j into ds.
                            Attention.scores(dO, base + vOff, stride, cnt, hd, 1, ds)
                            var dv = Vec16(repeating: 0)
                            forEachBlock16(cnt) { j, lanes in
                                var e = exp16(load16(p, j, lanes) - Vec16(repeating: lse))
                                if lanes < 16 { for k in lanes..<16 { e[k] = 0 } }
                                store16(e, p, j, lanes)
                                dv = fma16(e, load16(ds, j, lanes), dv)
                            }
                            let dd = Vec16(repeating: dv.sum())
                            // dS_j·scale = P_j·(dP_j − D)·scale.
                            forEachBlock16(cnt) { j, lanes in
                                store16(load16(p, j, lanes) * (load16(ds, j, lanes) - dd) * scale, ds, j, lanes)
                            }
                            if cnt < r1 {
                                (p + cnt).update(repeating: 0, count: r1 - cnt)
                                (ds + cnt).update(repeating: 0, count: r1 - cnt)
                            }
                        }
                        // dq_r = Σ_{j ≤ r} dS_rj·k_j, four rows at a time (one load of k_j each).
                        var r = r0
                        while r < r1 {
                            let m = min(4, r1 - r)
                            let ds0 = sBuf + (r - r0) * n
                            let ds1 = m > 1 ? ds0 + n : ds0, ds2 = m > 2 ? ds0 + 2 * n : ds0, ds3 = m > 3 ? ds0 + 3 * n : ds0
                            let last = r + m   // positions 0..<last (zeros past each row's own)
                            forEachBlock16(hd) { c, lanes in
                                var a0 = Vec16(repeating: 0), a1 = a0, a2 = a0, a3 = a0
                                var kp = base + kOff + c
                                for j in 0..<last {
                                    let k = load16(kp, 0, lanes)
                                    a0 = fma16(ds0[j], k, a0); a1 = fma16(ds1[j], k, a1)
                                    a2 = fma16(ds2[j], k, a2); a3 = fma16(ds3[j], k, a3)
                                    kp += stride
                                }
                                store16(a0, dBase + r * stride + h * hd, c, lanes)
                                if m > 1 { store16(a1, dBase + (r + 1) * stride + h * hd, c, lanes) }
                                if m > 2 { store16(a2, dBase + (r + 2) * stride + h * hd, c, lanes) }
                                if m > 3 { store16(a3, dBase + (r + 3) * stride + h * hd, c, lanes) }
                            }
                            r += m
                        }
                        // dk_j += Σ_r dS_rj·q_r, dv_j += Σ_r P_rj·dO_r over this block's rows
                        // r ≥ j, four positions j at a time (one load of q_r and dO_r each).
                        var j = 0
                        while j < r1 {
                            let m = min(4, r1 - j), rs = max(r0, j)
                            let j1 = m > 1 ? j + 1 : j, j2 = m > 2 ? j + 2 : j, j3 = m > 3 ? j + 3 : j
                            forEachBlock16(hd) { c, lanes in
                                let dk0 = dBase + j * stride + kOff, dk1 = dBase + j1 * stride + kOff
                                let dk2 = dBase + j2 * stride + kOff, dk3 = dBase + j3 * stride + kOff
                                var k0 = load16(dk0, c, lanes), k1 = load16(dk1, c, lanes)
                                var k2 = load16(dk2, c, lanes), k3 = load16(dk3, c, lanes)
                                var v0 = load16(dk0 + kvd, c, lanes), v1 = load16(dk1 + kvd, c, lanes)
                                var v2 = load16(dk2 + kvd, c, lanes), v3 = load16(dk3 + kvd, c, lanes)
                                for rr in rs..<r1 {
                                    let i = (rr - r0) * n
                                    let qv = load16(base + rr * stride + h * hd, c, lanes)
                                    let ov = load16(dOut + (doc.first + rr) * d + h * hd, c, lanes)
                                    let sp = sBuf + i, pp = pBuf + i
                                    k0 = fma16(sp[j], qv, k0); v0 = fma16(pp[j], ov, v0)
                                    if m == 4 {
                                        k1 = fma16(sp[j1], qv, k1); v1 = fma16(pp[j1], ov, v1)
                                        k2 = fma16(sp[j2], qv, k2); v2 = fma16(pp[j2], ov, v2)
                                        k3 = fma16(sp[j3], qv, k3); v3 = fma16(pp[j3], ov, v3)
                                    }
                                }
                                store16(k0, dk0, c, lanes); store16(v0, dk0 + kvd, c, lanes)
                                if m == 4 {
                                    store16(k1, dk1, c, lanes); store16(v1, dk1 + kvd, c, lanes)
                                    store16(k2, dk2, c, lanes); store16(v2, dk2 + kvd, c, lanes)
                                    store16(k3, dk3, c, lanes); store16(v3, dk3 + kvd, c, lanes)
                                }
                            }
                            j += m == 4 ? 4 : 1
                        }
                        r0 = r1
                    }
                }
            }
        }
    }

    /// Rows per backward block: P and dS of a block stay in L2 while dq, dk and dv are
    /// accumulated from them.
    static let backwardRowBlock = 32
}

extension Attention {
    /// s_j = dot(q, k_j)·scale for j < n, keys at k + j·stride: the per-position arithmetic
    /// of `group`'s scores (eight positions per dot8 when hd % 8 == 0 on x86-64).
    @inline(__always)
    static func scores(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ stride: Int, _ n: Int, _ hd: Int,
                       _ scale: Float, _ out: UnsafeMutablePointer<Float>) {
        #if arch(x86_64)
        if hd % 8 == 0 {
            var p = 0
            while p < n {
                let count = min(8, n - p)
                let s = dot8(q, k + p * stride, stride, count, hd) * scale
                if count == 8 {
                    UnsafeMutableRawPointer(out + p).storeBytes(of: s, as: SIMD8<Float>.self)
                } else {
                    for i in 0..<count { out[p + i] = s[i] }
                }
                p += 8
            }
            return
        }
        #endif
        for p in 0..<n { out[p] = dot(q, k + p * stride, hd) * scale }
    }

    /// `group` for positions 0..<visible of ONE segment (a training document), that also
    /// writes each head's softmax statistics (max score, log-sum-exp of the scaled scores)
    /// to stats[2h], stats[2h + 1]. Scores, softmax and P·V are `group`'s operations in
    /// `group`'s order, so `out` is bit-identical to `group`'s.
    static func groupWithStats(q: UnsafePointer<Float>, heads: Int, kv: KVView, offset: Int, headDim hd: Int,
                               visible n: Int, scale: Float, scores: UnsafeMutablePointer<Float>,
                               out: UnsafeMutablePointer<Float>, stats: UnsafeMutablePointer<Float>, prefetchRows: Bool) {
        let seg = kv.segments[0], kvStride = kv.rowStride
        if prefetchRows { prefetch(kv, lo: 0, visible: n, offset: offset, hd: hd) }
        let keys = seg.keys + offset
        for h in 0..<heads { Self.scores(q + h * hd, keys, kvStride, n, hd, scale, scores + h * n) }
        for h in 0..<heads {
            let (m, sum) = VectorMath.softmax(scores + h * n, n)
            stats[2 * h] = m
            stats[2 * h + 1] = m + log(sum)
        }
        weightedValues(scores, heads: heads, kv: kv, offset: offset, headDim: hd, lo: 0, visible: n, out: out)
    }
}
