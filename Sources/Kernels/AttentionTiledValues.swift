import CSupport

/// P·V of `Attention.rows`: the weighted values of SEVERAL query rows (and the query heads
/// of their GQA group) over one kv head, each value row read from memory once for all of
/// them — in the exact order of `Attention.weightedValues` for every row, so each output
/// keeps the bits of `Attention.group` on that row alone.
///
/// A stream j is one (row, head): weights w_j[p − lo_j] for positions lo_j..<hi_j (its
/// softmax probabilities), output out_j [hd]. `weightedValues`' order, per stream and per
/// output lane: 64 slot sums, position p into slot p mod 64 (absolute), each slot a chain
/// of fused multiply-adds over ascending positions from zero; then the 64 slots folded by
/// `reduceSlots`' pairs. Here, for each chunk of 16 lanes (hd % 16 == 0):
///
///     acc [streams × 64 slots × 16 lanes] = 0
///     for each tile of `valueTile` positions (ascending, cut at absolute multiples):
///         pack the tile's 16 lanes slot by slot (each slot's positions in consecutive
///         lines: the chains below read sequentially instead of 64 rows apart)
///         for each group of 6 streams, for each slot s:
///             every stream's own positions ≡ s of the tile before the group's common
///             range, alone; the common range for all 6 at once (12 registers of sums, one
///             load of each value row for 6 streams); then each stream's positions after it
///     out_j[chunk] = reduceSlots order over acc_j
///
/// Each chain only moves between registers and `acc` between tiles, and its positions
/// stay ascending (before, common, after; tile after tile), so every sum is the same
/// sequence of roundings as in `weightedValues`: bit-identical, whatever the grouping,
/// the tile and which rows share the call. Per (lane chunk, tile) the tile's value lines
/// are read from memory once for all streams (then from L1/L2), instead of once per row
/// (at 8k positions a kv head's values are 2 MB: `weightedValues` per row was bound by
/// reading them from L3 again for every row).
extension Attention {
    /// rows[p − first] = the value row (at `offset`) of position p for p in first ..< last,
    /// `zero` where no segment of `kv` holds p (none should; a zero row adds nothing).
    @inline(__always)
    static func valueRows(_ kv: KVView, first: Int, last: Int, offset: Int, zero: UnsafePointer<Float>,
                          into rows: UnsafeMutablePointer<UnsafePointer<Float>>) {
        rows.initialize(repeating: zero, count: last - first)
        for seg in kv.segments {
            let a = max(first, seg.start), b = min(last, seg.start + seg.count)
            if a >= b { continue }
            for p in a..<b { rows[p - first] = UnsafePointer(seg.values + (p - seg.start) * kv.rowStride + offset) }
        }
    }

    /// The shortest span (positions of the longest row of a block) `rows` streams through
    /// `weightedValuesRows`; below it each row's P·V runs alone (measured at 1 thread: the
    /// row-block streams cost ~3% of a training forward over 256-token documents, and win
    /// only once a kv head's values outgrow L2, ≥ 2k positions).
    static let valuesRowsMinSpan = 1024

    /// Positions per value tile of `weightedValuesRows`: one 16-lane column of a tile's
    /// value rows (tile · 64 bytes, 64 KB) stays in L2 while every stream group reads it.
    package static let valueTile = 1024

    /// Streams per register group of `weightedValuesRows` (6 × 16 lanes = 12 AVX2 registers).
    static let valueGroup = 6

    /// Scratch floats `weightedValuesRows` needs for `streams` streams: the slot sums of one
    /// 16-lane chunk.
    @inline(__always)
    static func valuesScratch(streams: Int) -> Int { streams * 64 * 16 }

    /// out_j = Σ_p w_j[p − lo_j] · v_p for each stream (see the type's comment) over `kv`'s
    /// value rows at `offset` (one kv head), hd % 16 == 0; w, lo, hi, out: per stream;
    /// `acc`: `valuesScratch(streams)` floats. Streams with lo_j ≥ hi_j get zeros.
    static func weightedValuesRows(w: UnsafePointer<UnsafePointer<Float>>, lo: UnsafePointer<Int>, hi: UnsafePointer<Int>,
                                   out: UnsafePointer<UnsafeMutablePointer<Float>>, streams: Int, kv: KVView,
                                   offset: Int, headDim hd: Int, acc: UnsafeMutablePointer<Float>) {
        var first = Int.max, last = Int.min
        for j in 0..<streams where lo[j] < hi[j] {
            first = min(first, lo[j])
            last = max(last, hi[j])
        }
        guard first < last else {
            for j in 0..<streams { out[j].update(repeating: 0, count: hd) }
            return
        }
        let n = last - first, tile = valueTile, group = valueGroup
        withUnsafeTemporaryAllocation(of: Float.self, capacity: hd) { zeroRow in
        let zero = UnsafePointer(zeroRow.baseAddress!)
        zeroRow.initialize(repeating: 0)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: tile * 16) { packBuffer in
        let packed = packBuffer.baseAddress!
        withUnsafeTemporaryAllocation(of: UnsafePointer<Float>.self, capacity: n) { rowTable in
            // Value row of position first + i (a position no segment holds reads zeros).
            let rows = rowTable.baseAddress!
            valueRows(kv, first: first, last: last, offset: offset, zero: zero, into: rows)
            var c = 0
            while c < hd {
                acc.update(repeating: 0, count: streams * 64 * 16)
                var a = first
                while a < last {
                    let base = a / tile * tile, b = min(last, base + tile)
                    // The tile's 16 lanes packed slot by slot: position p at
                    // packed + ((p mod 64) · tile/64 + (p − base)/64) · 16, so each slot's
                    // chain reads consecutive lines.
                    for p in a..<b {
                        let dst = packed + ((p & 63) * (tile / 64) + (p - base) / 64) * 16
                        store16(load16(rows[p - first] + c, 0, 16), dst, 0, 16)
                    }
                    // The next tile's lines of this chunk, into L2.
                    var p = b
                    while p < min(last, b + tile) {
                        bc_internal_prefetch_l2(rows[p - first] + c)
                        p += 1
                    }
                    var j0 = 0
                    while j0 < streams {
                        let m = min(group, streams - j0)
                        tileGroup(w: w + j0, lo: lo + j0, hi: hi + j0, m: m, packed: packed, base: base, a: a, b: b,
                                  acc: acc + j0 * 64 * 16)
                        j0 += m
                    }
                    a = b
                }
                for j in 0..<streams { reduceSlots16(acc + j * 64 * 16, out[j] + c) }
                c += 16
            }
        }
        }
        }
    }

    /// One tile a..<b (inside base..<base + valueTile) of `weightedValuesRows` for the m ≤ 6
    /// streams at w/lo/hi over the tile's packed 16 lanes (see there); acc: their slot
    /// sums, 64 × 16 each.
    @inline(__always)
    static func tileGroup(w: UnsafePointer<UnsafePointer<Float>>, lo: UnsafePointer<Int>, hi: UnsafePointer<Int>, m: Int,
                          packed: UnsafePointer<Float>, base: Int, a: Int, b: Int, acc: UnsafeMutablePointer<Float>) {
        let steps = valueTile / 64
        // The range all m streams read in this tile.
        var ga = a, gb = b
        for j in 0..<m {
            ga = max(ga, lo[j])
            gb = min(gb, hi[j])
        }
        if m < 6 || ga >= gb {
            // Each stream alone over its part of the tile.
            for j in 0..<m {
                let ra = max(a, lo[j]), rb = min(b, hi[j])
                if ra >= rb { continue }
                for s in 0..<64 { chain1(w[j], lo[j], packed, base, ra, rb, s, acc + j * 1024 + s * 16) }
            }
            return
        }
        let w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5]
        let l0 = lo[0], l1 = lo[1], l2 = lo[2], l3 = lo[3], l4 = lo[4], l5 = lo[5]
        for s in 0..<64 {
            let o = acc + s * 16
            // Before the common range, each stream alone.
            for j in 0..<6 where max(a, lo[j]) < ga {
                chain1(w[j], lo[j], packed, base, max(a, lo[j]), ga, s, o + j * 1024)
            }
            // The common range: the first position ≡ s, then every 64th.
            var p = ga + ((s - ga) & 63)
            if p < gb {
                var s0 = load16(o, 0, 16), s1 = load16(o + 1024, 0, 16), s2 = load16(o + 2048, 0, 16)
                var s3 = load16(o + 3072, 0, 16), s4 = load16(o + 4096, 0, 16), s5 = load16(o + 5120, 0, 16)
                var q0 = w0 + (p - l0), q1 = w1 + (p - l1), q2 = w2 + (p - l2)
                var q3 = w3 + (p - l3), q4 = w4 + (p - l4), q5 = w5 + (p - l5)
                var v = packed + (s * steps + (p - base) / 64) * 16
                repeat {
                    let x = load16(v, 0, 16)
                    s0 = fma16(q0.pointee, x, s0); s1 = fma16(q1.pointee, x, s1); s2 = fma16(q2.pointee, x, s2)
                    s3 = fma16(q3.pointee, x, s3); s4 = fma16(q4.pointee, x, s4); s5 = fma16(q5.pointee, x, s5)
                    q0 += 64; q1 += 64; q2 += 64; q3 += 64; q4 += 64; q5 += 64
                    v += 16
                    p &+= 64
                } while p < gb
                store16(s0, o, 0, 16); store16(s1, o + 1024, 0, 16); store16(s2, o + 2048, 0, 16)
                store16(s3, o + 3072, 0, 16); store16(s4, o + 4096, 0, 16); store16(s5, o + 5120, 0, 16)
            }
            // After it, each stream alone.
            for j in 0..<6 where min(b, hi[j]) > gb {
                chain1(w[j], lo[j], packed, base, gb, min(b, hi[j]), s, o + j * 1024)
            }
        }
    }

    /// Slot s's chain of one stream (weights w[p − lo]) over positions ≡ s (mod 64) of
    /// from..<to (inside the packed tile at base), continuing the 16 sums at o.
    @inline(__always)
    static func chain1(_ w: UnsafePointer<Float>, _ lo: Int, _ packed: UnsafePointer<Float>, _ base: Int,
                       _ from: Int, _ to: Int, _ s: Int, _ o: UnsafeMutablePointer<Float>) {
        var p = from + ((s - from) & 63)
        guard p < to else { return }
        var sum = load16(o, 0, 16)
        var v = packed + (s * (valueTile / 64) + (p - base) / 64) * 16
        repeat {
            sum = fma16(w[p - lo], load16(v, 0, 16), sum)
            v += 16
            p &+= 64
        } while p < to
        store16(sum, o, 0, 16)
    }

    /// out[0..<16] = the 64 slot rows of 16 lanes at s (slot i at s + 16·i) folded in
    /// `reduceSlots`' order; overwrites the slots.
    @inline(__always)
    static func reduceSlots16(_ s: UnsafeMutablePointer<Float>, _ out: UnsafeMutablePointer<Float>) {
        @inline(__always) func row(_ i: Int) -> Vec16 { load16(s + i * 16, 0, 16) }
        for l in 0..<16 { store16((row(l) + row(32 + l)) + (row(16 + l) + row(48 + l)), s + l * 16, 0, 16) }
        for l in 0..<8 { store16(row(l) + row(l + 8), s + l * 16, 0, 16) }
        for l in 0..<4 { store16(row(l) + row(l + 4), s + l * 16, 0, 16) }
        for l in 0..<2 { store16(row(l) + row(l + 2), s + l * 16, 0, 16) }
        store16(row(0) + row(1), out, 0, 16)
    }
}
