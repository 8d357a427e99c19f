import BCCore
import BCFormats
import BCModel
import BCOptim

/// What the trainer measured and decided at its last data step (`accumulateNextStep`).
/// Batch sizes count TARGET TOKENS (the loss is a mean per target token).
package struct BatchSizeStats: Equatable, Sendable {
    /// The step these describe (1-based `stepCount`; 0 before the first).
    package var step = 0
    package var microBatches = 0
    /// What the controller chose for the next step (decided at this step's boundary).
    package var nextMicroBatches = 0
    /// B_small: targets of the step's first micro-batch; B_big: of the whole step.
    package var smallTargets = 0
    package var bigTargets = 0
    /// |G_small|², |G_big|² of the mean-per-target gradients (NaN: the step had one
    /// micro-batch, or its first one held every target).
    package var smallSquaredNorm = Double.nan
    package var bigSquaredNorm = Double.nan
    /// This step's raw unbiased estimates of |G|² and tr Σ (NaN as above).
    package var gradSquared = Double.nan
    package var trace = Double.nan
    /// Their EMAs and B_simple = EMA(tr Σ) / EMA(|G|²), in target tokens.
    package var gradSquaredAverage = Double.nan
    package var traceAverage = Double.nan
    package var noiseScale = Double.nan
    /// κ = micro-batches / accumulationSteps, and the factor the step's learning rate got.
    package var kappa = 1.0
    package var lrScale = 1.0
    package init() {}

    /// Equal when every field has the same bits (a NaN estimate equals a NaN one: a
    /// resumed run must reproduce "no estimate yet" too).
    package static func == (a: Self, b: Self) -> Bool {
        let ints = [a.step, a.microBatches, a.nextMicroBatches, a.smallTargets, a.bigTargets]
            == [b.step, b.microBatches, b.nextMicroBatches, b.smallTargets, b.bigTargets]
        let da = [a.smallSquaredNorm, a.bigSquaredNorm, a.gradSquared, a.trace, a.gradSquaredAverage,
                  a.traceAverage, a.noiseScale, a.kappa, a.lrScale]
        let db = [b.smallSquaredNorm, b.bigSquaredNorm, b.gradSquared, b.trace, b.gradSquaredAverage,
                  b.traceAverage, b.noiseScale, b.kappa, b.lrScale]
        return ints && da.map(\.bitPattern) == db.map(\.bitPattern)
    }
}

/// The trainer's batch-size state: the controller (nil: fixed at `accumulationSteps`,
/// no learning-rate scaling), the noise-scale estimator, the last stats, and the LR
/// factor the pending step takes.
package struct TrainerBatchState: Sendable {
    package var controller: BatchSizeController?
    package var noise = GradientNoiseScale()
    package var stats = BatchSizeStats()
    var pendingLRScale: Double?
    package init() {}
}

extension Trainer {
    /// Micro-batches the next data step accumulates.
    /// Micro-batches of the next data step over all ranks (data-parallel: each rank runs
    /// `accumulationSteps` of them; a controller is refused there, see `setBatchControl`).
    package var nextMicroBatches: Int { batch.controller?.microBatches ?? globalAccumulationSteps }

    /// Sets the batch-size control (only at a step boundary: nothing pending). Resets the
    /// noise-scale estimator (its decay may change). Nothing changes on error.
    package func setBatchControl(_ o: BatchSizeOptions) throws {
        guard pending.microBatches == 0 else {
            throw BatchCoreError.badState("the batch size changes only at a step boundary (\(pending.microBatches) micro-batches pending)")
        }
        if collectives != nil, o.mode != .fixed || o.lrScaling != .none {
            throw BatchCoreError(.unsupported, "batch-size control with data-parallel training is not supported yet "
                                 + "(every rank would have to agree on the next batch)")
        }
        let c = try BatchSizeController(options: o, base: options.accumulationSteps)
        let n = try GradientNoiseScale(decay: o.noiseDecay)
        batch.controller = o.mode == .fixed && o.lrScaling == .none ? nil : c
        batch.noise = n
        batch.pendingLRScale = nil
    }

    /// After a data step's micro-batches: |G_big|² from the accumulator (one read pass),
    /// the estimator update when the step had a small/big pair, the stats, the controller's
    /// choice for the next step, and the LR factor `step` applies.
    func finishDataStep(microBatches: Int, smallTargets: Int, smallSum: Double?, bigTargets: Int) {
        var s = BatchSizeStats()
        s.step = stepCount
        s.microBatches = microBatches
        s.smallTargets = smallTargets
        s.bigTargets = bigTargets
        if let smallSum, smallTargets > 0, bigTargets > smallTargets {
            let bigSum = GradientNoiseScale.squaredNorm(gradientsOf: parameters)
            let t1 = Double(smallTargets), t = Double(bigTargets)
            s.smallSquaredNorm = smallSum / (t1 * t1)
            s.bigSquaredNorm = bigSum / (t * t)
            // A non-finite gradient (the step will be skipped) leaves the estimator as it was.
            do {
                try batch.noise.update(small: smallTargets, smallSquared: s.smallSquaredNorm, big: bigTargets,
                                       bigSquared: s.bigSquaredNorm)
                s.gradSquared = batch.noise.gradSquared
                s.trace = batch.noise.trace
            } catch {}
        }
        s.gradSquaredAverage = batch.noise.gradSquaredAverage
        s.traceAverage = batch.noise.traceAverage
        s.noiseScale = batch.noise.noiseScale
        if var c = batch.controller {
            s.kappa = c.kappa(microBatches)
            s.lrScale = c.options.lrScaling.scale(s.kappa)
            c.advance(stepsDone: stepCount, noise: batch.noise,
                      targetsPerMicroBatch: Double(bigTargets) / Double(max(microBatches, 1)))
            batch.controller = c
        } else {
            s.kappa = Double(microBatches) / Double(options.accumulationSteps)
        }
        s.nextMicroBatches = nextMicroBatches
        batch.stats = s
        batch.pendingLRScale = s.lrScale
    }

    /// Runs `body` (the optimizer step) with every group's learning rate times the
    /// pending step's LR factor, restoring the rates after; the factor is used once.
    func withBatchLearningRate<T>(_ optimizer: Optimizer, _ body: () throws -> T) throws -> T {
        let scale = batch.pendingLRScale ?? 1
        batch.pendingLRScale = nil
        guard scale != 1 else { return try body() }
        let saved = optimizer.groups.map(\.hyper.lr)
        // Check every scaled rate first, so a bad one changes nothing; restoring the saved
        // (valid) rates cannot fail.
        for lr in saved where !(lr * scale).isFinite {
            throw BatchCoreError.invalid("learning rate \(lr) x batch factor \(scale) is not finite")
        }
        for (g, lr) in saved.enumerated() { try optimizer.setLearningRate(lr * scale, group: g) }
        defer { for (g, lr) in saved.enumerated() { try? optimizer.setLearningRate(lr, group: g) } }
        return try body()
    }

    /// The batch-size state a checkpoint keeps (trainer.json "batch_size").
    func batchCheckpoint() -> JSONValue {
        var o = JSONObject()
        o["next_micro_batches"] = .int(Int64(nextMicroBatches))
        o["noise_updates"] = .int(Int64(batch.noise.updates))
        o["noise_grad_squared_sum"] = .string(String(batch.noise.gradSquaredSum.bitPattern))
        o["noise_trace_sum"] = .string(String(batch.noise.traceSum.bitPattern))
        return .object(o)
    }

    /// Checks a checkpoint's "batch_size" and returns the state to restore (nil: none saved).
    func readBatchCheckpoint(_ v: JSONValue?) throws -> TrainerBatchState? {
        guard let v else { return nil }
        func bits(_ key: String) throws -> Double {
            guard let s = v[key]?.stringValue, let b = UInt64(s) else { throw BatchCoreError.format("checkpoint: batch_size.\(key) is missing") }
            return Double(bitPattern: b)
        }
        guard let n = v["next_micro_batches"]?.intValue, let u = v["noise_updates"]?.intValue else {
            throw BatchCoreError.format("checkpoint: batch_size is incomplete")
        }
        var state = batch
        try state.noise.restore(gradSquaredSum: try bits("noise_grad_squared_sum"), traceSum: try bits("noise_trace_sum"), updates: u)
        if var c = state.controller { try c.restore(microBatches: n); state.controller = c }
        state.pendingLRScale = nil
        return state
    }
}
