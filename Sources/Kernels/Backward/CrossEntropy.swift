import BCCore

#if canImport(Glibc)
import Glibc
#endif

/// The summed cross-entropy of a set of rows and how many rows were targets.
/// Mean loss = lossSum / targets.
package struct CrossEntropyTotals: Equatable, Sendable {
    /// Σ over target rows of −log softmax(logits[t])[target[t]], in double.
    package var lossSum: Double
    /// Number of target rows (target ≠ −1).
    package var targets: Int

    package init(lossSum: Double = 0, targets: Int = 0) {
        self.lossSum = lossSum
        self.targets = targets
    }
}

/// Cross-entropy of logits against target tokens with a loss mask: the forward/backward
/// pair of the training pass.
///
/// Buffers:
///
///     logits   [T × V]   row t's logits at + t·V
///     targets  [T]       Int32: the target token of row t in 0..<V, or −1 = not a target
///                        (the loss mask: prompt tokens, padding, a document's last token)
///     dlogits  [T × V]   WRITTEN: (softmax(logits[t]) − onehot(target[t])) · scale for a
///                        target row, 0 for a masked row
///
/// Loss normalisation is the caller's: `scale` is 1/N with N the number of target tokens
/// of the WHOLE optimizer step (every micro-batch), not a per-micro-batch mean.
/// Forward adds each row's loss to the caller's totals in row order, so splitting the rows
/// over several calls gives the same double as one call; rows are computed in parallel,
/// each independently (numerically stable: the row max is subtracted before exp).
package enum CrossEntropyOp {
    /// Throws (changing nothing) when a target is neither −1 nor in 0..<V.
    static func check(_ targets: UnsafePointer<Int32>, rows: Int, vocab: Int) throws {
        guard rows >= 0, vocab > 0 else { throw BatchCoreError.invalid("cross-entropy: \(rows) rows, vocabulary \(vocab)") }
        for r in 0..<rows {
            let t = Int(targets[r])
            guard t == -1 || (t >= 0 && t < vocab) else {
                throw BatchCoreError.invalid("cross-entropy: row \(r) has target \(t), outside -1 (not a target) and 0..<\(vocab)")
            }
        }
    }

    /// Adds the rows' summed loss and their number of targets to `totals`.
    package static func forward(logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>, rows: Int, vocab: Int,
                                into totals: inout CrossEntropyTotals) throws {
        try check(targets, rows: rows, vocab: vocab)
        if rows == 0 { return }
        let losses = UnsafeMutablePointer<Double>.allocate(capacity: rows)
        defer { losses.deallocate() }
        forEachRowBlock(rows, block: 1) { range in
            for r in range {
                let t = Int(targets[r])
                losses[r] = t < 0 ? 0 : rowLoss(logits + r * vocab, vocab, target: t)
            }
        }
        for r in 0..<rows where targets[r] >= 0 {
            totals.lossSum += losses[r]
            totals.targets += 1
        }
    }

    /// The rows' totals alone.
    package static func forward(logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>, rows: Int,
                                vocab: Int) throws -> CrossEntropyTotals {
        var totals = CrossEntropyTotals()
        try forward(logits: logits, targets: targets, rows: rows, vocab: vocab, into: &totals)
        return totals
    }

    /// −log softmax(l)[target] = max + log Σ exp(l − max) − l[target], the sum in double.
    static func rowLoss(_ l: UnsafePointer<Float>, _ n: Int, target: Int) -> Double {
        var mv = Vec16(repeating: -.infinity)
        var j = 0
        while j + 16 <= n { mv = max16(mv, load16(l, j, 16)); j += 16 }
        var m = mv.max()
        while j < n { m = max(m, l[j]); j += 1 }
        var acc0 = SIMD8<Double>(repeating: 0), acc1 = SIMD8<Double>(repeating: 0)
        let mVec = Vec16(repeating: m)
        forEachBlock16(n) { i, lanes in
            var e = exp16(load16(l, i, lanes) - mVec)
            if lanes < 16 { for k in lanes..<16 { e[k] = 0 } }
            acc0 += SIMD8<Double>(e.lowHalf)
            acc1 += SIMD8<Double>(e.highHalf)
        }
        return Double(m) + log((acc0 + acc1).sum()) - Double(l[target])
    }

    /// dlogits from the logits (softmax recomputed with `VectorMath.softmax`). dlogits may be
    /// the logits buffer itself (in place); no partial overlap. Throws (changing nothing)
    /// for a bad target or a non-finite scale.
    package static func backward(logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>, dlogits: UnsafeMutablePointer<Float>,
                                 rows: Int, vocab: Int, scale: Float) throws {
        try check(targets, rows: rows, vocab: vocab)
        guard scale.isFinite else { throw BatchCoreError.invalid("cross-entropy: scale \(scale) is not finite") }
        let s = Vec16(repeating: scale)
        forEachRowBlock(rows, block: 1) { range in
            for r in range {
                let src = logits + r * vocab, dst = dlogits + r * vocab
                let t = Int(targets[r])
                if t < 0 {
                    dst.update(repeating: 0, count: vocab)
                    continue
                }
                if UnsafePointer(dst) != src { dst.update(from: src, count: vocab) }
                VectorMath.softmax(dst, vocab)
                let pt = dst[t]
                forEachBlock16(vocab) { i, lanes in store16(load16(dst, i, lanes) * s, dst, i, lanes) }
                dst[t] = (pt - 1) * scale
            }
        }
    }
}
