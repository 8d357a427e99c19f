import BCCore
import BCKernels
import BCModel

/// The "simple" gradient noise scale B_simple = tr(Σ) / |G|² (McCandlish et al. 2018,
/// "An Empirical Model of Large-Batch Training"), estimated during training from two
/// gradients the trainer computes anyway (appendix A.1):
///
///     G_small: the mean gradient of a small batch of B_small samples
///     G_big:   the mean gradient of a big batch of B_big > B_small samples
///     E|G_B|² = |G|² + tr(Σ)/B   (Σ: per-sample gradient covariance), so
///     |G|²   ≈ (B_big |G_big|² − B_small |G_small|²) / (B_big − B_small)     (unbiased)
///     tr(Σ)  ≈ (|G_small|² − |G_big|²) / (1/B_small − 1/B_big)               (unbiased)
///
/// Each estimate is noisy (|G|² can come out negative), so each is smoothed by its own
/// exponential moving average (decay `decay`, bias-corrected as Adam does) and the ratio
/// is taken of the smoothed values: B_simple = EMA(tr Σ) / EMA(|G|²), NaN while
/// EMA(|G|²) ≤ 0. B counts samples; the trainer counts TARGET TOKENS (a step's loss is a
/// mean per target token), so its B_simple is a number of target tokens.
package struct GradientNoiseScale: Equatable, Sendable {
    /// EMA decay of both estimates, in [0, 1).
    package let decay: Double
    /// Raw estimates of the last update.
    package private(set) var gradSquared = Double.nan
    package private(set) var trace = Double.nan
    /// Uncorrected EMA sums and the number of updates (bias correction 1 − decay^n).
    package private(set) var gradSquaredSum = 0.0
    package private(set) var traceSum = 0.0
    package private(set) var updates = 0

    /// The default estimator: decay 0.9.
    package init() { decay = 0.9 }

    package init(decay: Double) throws {
        guard decay.isFinite, decay >= 0, decay < 1 else {
            throw BatchCoreError.invalid("noise-scale EMA decay \(decay) outside 0 ..< 1")
        }
        self.decay = decay
    }

    /// The two unbiased estimates (|G|², tr Σ) from one small/big pair: mean-gradient
    /// squared norms `smallSquared` = |G_small|² over `small` samples and `bigSquared` =
    /// |G_big|² over `big` samples. Needs 0 < small < big.
    package static func estimates(small: Double, smallSquared: Double, big: Double, bigSquared: Double)
        -> (gradSquared: Double, trace: Double) {
        let g2 = (big * bigSquared - small * smallSquared) / (big - small)
        let tr = (smallSquared - bigSquared) / (1 / small - 1 / big)
        return (g2, tr)
    }

    /// Adds one pair; throws (nothing changes) unless 0 < small < big and both norms are
    /// finite and ≥ 0.
    package mutating func update(small: Int, smallSquared: Double, big: Int, bigSquared: Double) throws {
        guard small > 0, big > small else {
            throw BatchCoreError.invalid("noise scale: batch sizes \(small) and \(big) (need 0 < small < big)")
        }
        guard smallSquared.isFinite, bigSquared.isFinite, smallSquared >= 0, bigSquared >= 0 else {
            throw BatchCoreError(.nonFinite, "noise scale: squared norms \(smallSquared), \(bigSquared)")
        }
        let (g2, tr) = Self.estimates(small: Double(small), smallSquared: smallSquared, big: Double(big), bigSquared: bigSquared)
        gradSquared = g2
        trace = tr
        gradSquaredSum = decay * gradSquaredSum + (1 - decay) * g2
        traceSum = decay * traceSum + (1 - decay) * tr
        updates += 1
    }

    private var correction: Double { 1 - pow(decay, Double(updates)) }
    /// Bias-corrected EMA of |G|² (NaN before the first update).
    package var gradSquaredAverage: Double { updates > 0 ? gradSquaredSum / correction : .nan }
    /// Bias-corrected EMA of tr Σ (NaN before the first update).
    package var traceAverage: Double { updates > 0 ? traceSum / correction : .nan }
    /// B_simple = EMA(tr Σ) / EMA(|G|²); NaN before the first update or while EMA(|G|²) ≤ 0
    /// or EMA(tr Σ) < 0.
    package var noiseScale: Double {
        guard updates > 0, gradSquaredSum > 0, traceSum >= 0 else { return .nan }
        return traceSum / gradSquaredSum
    }

    /// Restores a saved state (checkpoint).
    package mutating func restore(gradSquaredSum: Double, traceSum: Double, updates: Int) throws {
        guard gradSquaredSum.isFinite, traceSum.isFinite, updates >= 0 else {
            throw BatchCoreError.format("noise scale state \(gradSquaredSum), \(traceSum), \(updates) is invalid")
        }
        self.gradSquaredSum = gradSquaredSum
        self.traceSum = traceSum
        self.updates = updates
    }

    /// Σ x² over every tensor's buffer, in double: one read pass, no copy. Fixed chunks of
    /// 2^16 floats summed in index order, so the result is the same bits whatever the
    /// thread count.
    ///
    ///     buffers[k]  [counts[k]] float32
    package static func squaredNorm(_ buffers: [(UnsafePointer<Float>, Int)]) -> Double {
        let chunk = 1 << 16
        var items: [(Int, Int, Int)] = []
        for (k, b) in buffers.enumerated() {
            var s = 0
            while s < b.1 { items.append((k, s, min(b.1 - s, chunk))); s += chunk }
        }
        var partial = [Double](repeating: 0, count: items.count)
        partial.withUnsafeMutableBufferPointer { out in
            let out = out
            Parallel.forEach(items.count) { i in
                let (k, s, n) = items[i]
                out[i] = Reductions.sumOfSquares(buffers[k].0 + s, n)
            }
        }
        return partial.reduce(0, +)
    }

    /// Σ g² over the gradients of `parameters` (the trainer's accumulator).
    package static func squaredNorm(gradientsOf parameters: [ModelParameter]) -> Double {
        squaredNorm(parameters.compactMap { p in p.gradient.map { (UnsafePointer($0), p.count) } })
    }
}

#if canImport(Glibc)
import Glibc
#endif
