#if canImport(Glibc)
import Glibc
#endif

extension Attention {
    /// Merges two attention results of the same query heads over DISJOINT position sets
    /// into the result over their union (the log-sum-exp combination of Hydragen /
    /// flash-decoding): for each head h, with A, B the two parts' normalized outputs
    /// (hd floats) and a, b their log-sum-exps of the scaled scores,
    ///
    ///     m = max(a, b),  wa = e^(a − m),  wb = e^(b − m),  s = wa + wb
    ///     acc_h = (wa/s) · A_h + (wb/s) · B_h,        lse_h = m + log s
    ///
    /// which is softmax over the union times V, exactly in real arithmetic.
    ///
    /// `acc`: heads × hd floats (head h at acc + h·hd), A in, the merged result out;
    /// `accStats`, `partStats`: the statistics as `Attention.rows` writes them — head h's
    /// max score at [2h], its log-sum-exp at [2h + 1] (accStats receives the merged ones;
    /// the max is kept ≥ both parts' so it stays an upper bound); `part`: B, heads × hd.
    /// A part that read no position has lse −∞ and leaves the other unchanged.
    ///
    /// The same float operations for the same inputs on any thread: deterministic.
    package static func mergePartial(into acc: UnsafeMutablePointer<Float>, stats accStats: UnsafeMutablePointer<Float>,
                                     part: UnsafePointer<Float>, stats partStats: UnsafePointer<Float>,
                                     heads: Int, headDim hd: Int) {
        for h in 0..<heads {
            let a = accStats[2 * h + 1], b = partStats[2 * h + 1]
            let o = acc + h * hd, p = part + h * hd
            if b == -.infinity { continue }
            if a == -.infinity {
                o.update(from: p, count: hd)
                accStats[2 * h] = partStats[2 * h]
                accStats[2 * h + 1] = b
                continue
            }
            let m = max(a, b)
            let ea = exp(a - m), eb = exp(b - m)
            let s = ea + eb
            let wa = ea / s, wb = eb / s
            var c = 0
            while c < hd {
                let l = min(16, hd - c)
                store16(fma16(wb, load16(p, c, l), load16(o, c, l) * wa), o, c, l)
                c += 16
            }
            accStats[2 * h] = max(accStats[2 * h], partStats[2 * h])
            accStats[2 * h + 1] = m + log(s)
        }
    }
}
