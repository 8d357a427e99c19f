import BCCore
#if canImport(Glibc)
import Glibc
#endif

/// How the learning rate follows the batch when the batch is κ times the base batch
/// (κ = micro-batches of the step / the trainer's `accumulationSteps`).
package enum LearningRateScaling: Int32, Equatable, Sendable {
    /// The rate stays.
    case none = 0
    /// lr·κ (SGD: Goyal et al. 2017).
    case linear = 1
    /// lr·√κ (Adam family: Malladi et al. 2022, "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms").
    case squareRoot = 2

    package func scale(_ kappa: Double) -> Double {
        switch self {
        case .none: 1
        case .linear: kappa
        case .squareRoot: kappa.squareRoot()
        }
    }
}

/// How many micro-batches a step accumulates, decided only at step boundaries.
package struct BatchSizeOptions: Equatable, Sendable {
    package enum Mode: Int32, Equatable, Sendable {
        /// Always `TrainerOptions.accumulationSteps`.
        case fixed = 0
        /// A linear ramp from `minMicroBatches` at step 0 to `maxMicroBatches` at step
        /// `rampSteps` (then constant): n(s) = min + ⌊(max − min)·s / rampSteps⌋.
        case ramp = 1
        /// Grow toward the measured critical batch: after `warmupSteps` estimates,
        /// n ← clamp(max(n, ⌈B_simple / targets per micro-batch⌉), n ≤ 2·n_prev, [min, max]).
        /// Starts at `accumulationSteps` clamped to [min, max]; never shrinks.
        case noise = 2
    }
    package var mode = Mode.fixed
    package var minMicroBatches = 1
    package var maxMicroBatches = 1
    package var rampSteps = 0
    package var lrScaling = LearningRateScaling.none
    /// EMA decay of the noise-scale estimates (`GradientNoiseScale`).
    package var noiseDecay = 0.9
    /// Estimates the noise mode waits for before it changes the batch.
    package var warmupSteps = 3

    package init() {}

    package func validate() throws {
        guard minMicroBatches >= 1, maxMicroBatches >= minMicroBatches, maxMicroBatches <= 1 << 16 else {
            throw BatchCoreError.invalid("micro-batch bounds [\(minMicroBatches), \(maxMicroBatches)]: need 1 <= min <= max <= \(1 << 16)")
        }
        guard rampSteps >= 0, rampSteps <= 1 << 40 else { throw BatchCoreError.invalid("ramp steps \(rampSteps) is negative or too large") }
        if mode == .ramp, rampSteps == 0 { throw BatchCoreError.invalid("a ramp needs ramp steps >= 1") }
        guard noiseDecay.isFinite, noiseDecay >= 0, noiseDecay < 1 else {
            throw BatchCoreError.invalid("noise-scale EMA decay \(noiseDecay) outside 0 ..< 1")
        }
        guard warmupSteps >= 0, warmupSteps <= 1 << 30 else { throw BatchCoreError.invalid("warmup steps \(warmupSteps) is negative or too large") }
        if mode == .noise, minMicroBatches < 2 {
            throw BatchCoreError.invalid("the noise-driven batch needs at least 2 micro-batches per step (min 2) to measure the noise scale")
        }
    }
}

/// The controller: the number of micro-batches of the next step.
package struct BatchSizeController: Equatable, Sendable {
    package let options: BatchSizeOptions
    /// The trainer's base accumulation (κ = 1).
    package let base: Int
    /// Micro-batches of the next step.
    package private(set) var microBatches: Int

    package init(options: BatchSizeOptions, base: Int) throws {
        try options.validate()
        guard base >= 1 else { throw BatchCoreError.invalid("base accumulation \(base) < 1") }
        self.options = options
        self.base = base
        switch options.mode {
        case .fixed: microBatches = base
        case .ramp: microBatches = options.minMicroBatches
        case .noise: microBatches = min(max(base, options.minMicroBatches), options.maxMicroBatches)
        }
    }

    /// κ of a step of `n` micro-batches.
    package func kappa(_ n: Int) -> Double { Double(n) / Double(base) }

    /// The ramp's micro-batches at step `s` (0-based).
    package static func ramp(_ o: BatchSizeOptions, step s: Int) -> Int {
        guard o.rampSteps > 0, s < o.rampSteps else { return o.maxMicroBatches }
        let span = o.maxMicroBatches - o.minMicroBatches
        return o.minMicroBatches + Int((Double(span) * Double(max(s, 0)) / Double(o.rampSteps)).rounded(.down))
    }

    /// Decides the next step's micro-batches after a step: `stepsDone` steps taken,
    /// `noise` the estimator after this step's update, `targetsPerMicroBatch` the mean
    /// targets of this step's micro-batches.
    package mutating func advance(stepsDone: Int, noise: GradientNoiseScale, targetsPerMicroBatch: Double) {
        switch options.mode {
        case .fixed: microBatches = base
        case .ramp: microBatches = Self.ramp(options, step: stepsDone)
        case .noise:
            let b = noise.noiseScale
            guard noise.updates >= options.warmupSteps, b.isFinite, targetsPerMicroBatch > 0 else { return }
            let want = (b / targetsPerMicroBatch).rounded(.up)
            let target = want >= Double(options.maxMicroBatches) ? options.maxMicroBatches : Int(want)
            let grown = min(max(microBatches, target), 2 * microBatches)
            microBatches = min(max(grown, options.minMicroBatches), options.maxMicroBatches)
        }
    }

    /// Restores the next step's micro-batches (checkpoint).
    package mutating func restore(microBatches n: Int) throws {
        guard n >= 1, n <= 1 << 16 else { throw BatchCoreError.format("checkpoint: micro-batches \(n) out of range") }
        microBatches = n
    }
}
