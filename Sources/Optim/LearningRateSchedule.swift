import BCCore
#if canImport(Glibc)
import Glibc
#endif

/// Learning-rate schedules as pure functions of the 0-based step.
///
/// Warmup (all kinds): step s < warmup gets base·(s+1)/warmup (linear from base/warmup).
/// After warmup, with progress = (s - warmup)/(total - warmup) clamped to [0, 1]:
///  - constant: base
///  - cosine:   min + ½(base - min)(1 + cos(π·progress))        (SGDR / HF get_cosine_schedule_with_warmup)
///  - linear:   base + (min - base)·progress
///  - WSD (warmup-stable-decay, "MiniCPM"/"Power Scheduler" style): base until
///    total - decay_steps, then linear to min over the last decay_steps.
/// Steps at or past total give min (constant: base).
package struct LearningRateSchedule: Equatable, Sendable {
    package enum Kind: Int32, Sendable { case constant = 0, warmupCosine = 1, warmupLinear = 2, warmupStableDecay = 3 }

    package var kind: Kind
    package var baseLR: Double
    package var minLR: Double
    package var warmupSteps: Int64
    package var totalSteps: Int64
    package var decaySteps: Int64

    package init(kind: Kind, baseLR: Double, minLR: Double = 0, warmupSteps: Int64 = 0, totalSteps: Int64 = 0,
                decaySteps: Int64 = 0) {
        self.kind = kind
        self.baseLR = baseLR
        self.minLR = minLR
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
        self.decaySteps = decaySteps
    }

    package func validate() throws {
        guard baseLR.isFinite, baseLR >= 0, minLR.isFinite, minLR >= 0 else {
            throw BatchCoreError.invalid("schedule: base_lr and min_lr must be finite and >= 0")
        }
        guard warmupSteps >= 0, totalSteps >= 0, decaySteps >= 0 else {
            throw BatchCoreError.invalid("schedule: step counts must be >= 0")
        }
        switch kind {
        case .constant: break
        case .warmupCosine, .warmupLinear:
            guard totalSteps >= warmupSteps else {
                throw BatchCoreError.invalid("schedule: warmup_steps (\(warmupSteps)) is longer than total_steps (\(totalSteps))")
            }
        case .warmupStableDecay:
            // decay <= total - warmup: warmup + decay could overflow (both are >= 0 here).
            guard decaySteps > 0, totalSteps >= warmupSteps, decaySteps <= totalSteps - warmupSteps else {
                throw BatchCoreError.invalid("schedule: WSD needs decay_steps > 0 and warmup + decay <= total_steps")
            }
        }
    }

    package func learningRate(at step: Int64) throws -> Double {
        try validate()
        guard step >= 0 else { throw BatchCoreError.invalid("schedule: step must be >= 0 (got \(step))") }
        if step < warmupSteps { return baseLR * Double(step + 1) / Double(warmupSteps) }
        // Decay progress after warmup; a schedule with no decay steps left is at its end.
        let progress = step >= totalSteps ? 1 : Double(step - warmupSteps) / Double(totalSteps - warmupSteps)
        switch kind {
        case .constant:
            return baseLR
        case .warmupCosine:
            return minLR + 0.5 * (baseLR - minLR) * (1 + cos(Double.pi * progress))
        case .warmupLinear:
            return baseLR + (minLR - baseLR) * progress
        case .warmupStableDecay:
            let decayStart = totalSteps - decaySteps
            if step < decayStart { return baseLR }
            let progress = min(1, Double(step - decayStart) / Double(decaySteps))
            return baseLR + (minLR - baseLR) * progress
        }
    }
}
