import CSupport
#if canImport(Glibc)
import Glibc
#endif

/// One query row of `Attention.rows`: its `heads` query heads at `q` (head h at q + h·hd),
/// the positions lo..<visible it reads, and where its heads' outputs go (head h at
/// out + h·hd). `stats` (training): where head h's softmax statistics go — the max
/// scaled score at stats[2h], the log-sum-exp at stats[2h + 1] (`groupWithStats`'s).
package struct AttentionQuery {
    package let q: UnsafePointer<Float>
    package let out: UnsafeMutablePointer<Float>
    package let lo: Int
    package let visible: Int
    package let stats: UnsafeMutablePointer<Float>?

    package init(q: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, lo: Int, visible: Int,
                 stats: UnsafeMutablePointer<Float>? = nil) {
        self.q = q
        self.out = out
        self.lo = lo
        self.visible = visible
        self.stats = stats
    }

    @inline(__always) var count: Int { max(0, visible - lo) }
}

extension Attention {
    /// Positions per key tile of `rows`: a tile's keys of one kv head (tile · hd floats;
    /// 8 KB at hd 64) stay in L1 beside the block's queries and score rows while every row
    /// reads them (64 positions, 16 KB, overflowed the 32 KB L1 with a 16-row block: an
    /// 8k-token prefill took 3% longer). Any tile size gives the same bits.
    package static let tilePositions = 32

    /// Scratch floats `rows` needs for `queries` with `heads` heads each:
    /// heads · Σ (visible − lo).
    package static func tiledScratch(_ queries: UnsafeBufferPointer<AttentionQuery>, heads: Int) -> Int {
        var n = 0
        for r in queries { n += r.count }
        return heads * n
    }

    /// `group` for SEVERAL query rows reading the same `kv` (the rows of a prompt chunk
    /// and the query heads of a GQA group), tiled so each key/value tile is read from
    /// memory once for all of them instead of once per row:
    ///
    ///     1. scores: for each tile of `tilePositions` keys, for each row, for each head:
    ///        s[r][h][p − lo_r] = scale · q_rh·k_p  (the tile stays in L1 across the rows)
    ///     2. softmax of each (row, head)'s scores: VectorMath.softmax, as `group` does
    ///     3. P·V: `weightedValuesRows` — every (row, head) a stream of `weightedValues`'
    ///        slot sums, six streams at a time over each value tile, so each value row is
    ///        read from memory once for the block (head dims not a multiple of 16: each
    ///        row alone through `weightedValues`).
    ///
    /// Every output value is produced by EXACTLY the float operations of `group` on that
    /// row alone, in the same order: a score is one dot8 (or dot) chain of its own
    /// position; softmax is the same call on the same contiguous scores; a P·V sum is the
    /// same chain of fused multiply-adds over ascending positions into the same slot, folded
    /// by the same tree — parking a partial sum in memory between tiles does not change
    /// its bits. So the result is bit-identical
    /// to `group`'s, whatever the tile boundaries, the segmentation, which rows share the
    /// block and on which thread: determinism and batch invariance carry over unchanged.
    ///
    /// With `stats`, a row also gets `groupWithStats`'s statistics (the same bits).
    ///
    /// `queries`: the rows, each with its own lo..<visible (causal, sliding windows); `kv`,
    /// `offset`, `hd`, `scale` as in `group`; `scores` holds `tiledScratch` floats.
    package static func rows(_ queries: UnsafeBufferPointer<AttentionQuery>, heads: Int, kv: KVView, offset: Int,
                             headDim hd: Int, scale: Float, scores: UnsafeMutablePointer<Float>) {
        let tile = tilePositions, kvStride = kv.rowStride
        var lo = Int.max, hi = 0
        for r in queries where r.count > 0 {
            lo = min(lo, r.lo)
            hi = max(hi, r.visible)
        }
        // Row r's scores, head h: scores + base[r] + h · count_r.
        var base = [Int](repeating: 0, count: queries.count)
        var next = 0
        for (i, r) in queries.enumerated() {
            base[i] = next
            next += heads * r.count
            if r.count == 0 { r.out.update(repeating: 0, count: heads * hd) }
        }
        guard lo < hi else { return }

        // 1. Scores, tile by tile.
        forEachTile(kv, lo: lo, hi: hi, tile: tile) { seg, a, b, next in
            if let next { prefetchTile(seg.keys, seg.start, kvStride, offset, hd, next) }
            for (i, r) in queries.enumerated() {
                let ra = max(a, r.lo), rb = min(b, r.visible)
                if ra >= rb { continue }
                let n = r.count, row = scores + base[i]
                var k = seg.keys + (ra - seg.start) * kvStride + offset
                #if arch(x86_64)
                if hd % 8 == 0 {
                    var p = ra
                    while p < rb {
                        let count = min(8, rb - p)
                        for h in 0..<heads {
                            let s = dot8(r.q + h * hd, k, kvStride, count, hd) * scale
                            let dst = row + h * n + (p - r.lo)
                            if count == 8 {
                                UnsafeMutableRawPointer(dst).storeBytes(of: s, as: SIMD8<Float>.self)
                            } else {
                                for j in 0..<count { dst[j] = s[j] }
                            }
                        }
                        k += 8 * kvStride
                        p += 8
                    }
                    continue
                }
                #endif
                for p in ra..<rb {
                    for h in 0..<heads { row[h * n + p - r.lo] = dot(r.q + h * hd, k, hd) * scale }
                    k += kvStride
                }
            }
        }

        // 2. Softmax of each (row, head).
        for (i, r) in queries.enumerated() where r.count > 0 {
            for h in 0..<heads {
                let (m, sum) = VectorMath.softmax(scores + base[i] + h * r.count, r.count)
                if let st = r.stats {
                    st[2 * h] = m
                    st[2 * h + 1] = m + log(sum)
                }
            }
            r.out.update(repeating: 0, count: heads * hd)
        }

        // 3. P·V: every (row, head) a stream of `weightedValuesRows` (each value row read
        //    once for all of them) over long spans; head dims not a multiple of 16, or
        //    spans short enough that each row's values stay in cache: each row alone (the
        //    same bits either way).
        let longest = queries.reduce(0) { max($0, $1.visible - $1.lo) }
        if hd % 16 != 0 || longest < Self.valuesRowsMinSpan {
            for (i, r) in queries.enumerated() where r.count > 0 {
                weightedValues(scores + base[i], heads: heads, kv: kv, offset: offset, headDim: hd,
                               lo: r.lo, visible: r.visible, out: r.out)
            }
            return
        }
        let streams = queries.reduce(0) { $0 + ($1.count > 0 ? heads : 0) }
        withUnsafeTemporaryAllocation(of: UnsafePointer<Float>.self, capacity: streams) { w in
        withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<Float>.self, capacity: streams) { out in
        withUnsafeTemporaryAllocation(of: Int.self, capacity: 2 * streams) { range in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: valuesScratch(streams: streams)) { acc in
            var j = 0
            for (i, r) in queries.enumerated() where r.count > 0 {
                for h in 0..<heads {
                    w[j] = UnsafePointer(scores + base[i] + h * r.count)
                    out[j] = r.out + h * hd
                    range[j] = r.lo
                    range[streams + j] = r.visible
                    j += 1
                }
            }
            let lo = UnsafePointer(range.baseAddress!)
            weightedValuesRows(w: UnsafePointer(w.baseAddress!), lo: lo, hi: lo + streams,
                               out: UnsafePointer(out.baseAddress!), streams: streams, kv: kv, offset: offset,
                               headDim: hd, acc: acc.baseAddress!)
        }
        }
        }
        }
    }

    /// Calls body(segment, a, b, next) for the tiles a..<b of positions lo..<hi in
    /// ascending order: each segment's part cut at multiples of `tile` (absolute
    /// positions, so the cuts never depend on which rows ask); next: the following
    /// tile's positions when it lies in the same segment.
    @inline(__always)
    static func forEachTile(_ kv: KVView, lo: Int, hi: Int, tile: Int,
                            _ body: (KVSegment, Int, Int, Range<Int>?) -> Void) {
        for seg in kv.segments {
            let a = max(lo, seg.start), b = min(hi, seg.start + seg.count)
            var t = a
            while t < b {
                let end = min(b, (t / tile + 1) * tile)
                body(seg, t, end, end < b ? end..<min(b, end + tile) : nil)
                t = end
            }
        }
    }

    /// Requests (into L2) the hd floats at `offset` of the rows of positions `range` of a
    /// segment whose position `segStart` is at `rows` (rows `stride` floats apart).
    @inline(__always)
    static func prefetchTile(_ rows: UnsafePointer<Float>, _ segStart: Int, _ stride: Int, _ offset: Int, _ hd: Int,
                             _ range: Range<Int>) {
        let rowBytes = hd * 4
        for p in range {
            let r = UnsafeRawPointer(rows + (p - segStart) * stride + offset)
            var c = 0
            while c < rowBytes {
                bc_internal_prefetch_l2(r + c)
                c += 64
            }
            bc_internal_prefetch_l2(r + rowBytes - 4)
        }
    }
}
