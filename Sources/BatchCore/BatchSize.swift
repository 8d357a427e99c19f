import BCCore
import BCTrain
import CBatchCore

/// The C side of batch-size control and the gradient noise scale (see the header's
/// "Batch size control" section): validate, convert, forward to `Trainer`.

private var defaultBatchControl: bc_batch_control {
    let o = BatchSizeOptions()
    return bc_batch_control(struct_size: UInt32(MemoryLayout<bc_batch_control>.size), mode: o.mode.rawValue,
                            min_micro_batches: UInt32(o.minMicroBatches), max_micro_batches: UInt32(o.maxMicroBatches),
                            ramp_steps: Int64(o.rampSteps), lr_scaling: o.lrScaling.rawValue,
                            warmup_steps: UInt32(o.warmupSteps), noise_ema: o.noiseDecay)
}

private func batchOptions(_ control: UnsafePointer<bc_batch_control>?) throws -> BatchSizeOptions {
    let c = try readParams(control, defaults: defaultBatchControl, "bc_batch_control")
    guard let mode = BatchSizeOptions.Mode(rawValue: c.mode) else {
        throw BatchCoreError.invalid("bc_batch_control.mode \(c.mode): use a BC_BATCH_* value")
    }
    guard let scaling = LearningRateScaling(rawValue: c.lr_scaling) else {
        throw BatchCoreError.invalid("bc_batch_control.lr_scaling \(c.lr_scaling): use a BC_LR_SCALE_* value")
    }
    guard c.ramp_steps >= 0, c.ramp_steps <= 1 << 40 else {
        throw BatchCoreError.invalid("bc_batch_control.ramp_steps \(c.ramp_steps) outside 0...2^40")
    }
    var o = BatchSizeOptions()
    o.mode = mode
    o.lrScaling = scaling
    o.minMicroBatches = Int(c.min_micro_batches)
    o.maxMicroBatches = Int(c.max_micro_batches)
    o.rampSteps = Int(c.ramp_steps)
    o.warmupSteps = Int(c.warmup_steps)
    o.noiseDecay = c.noise_ema
    try o.validate()
    return o
}

@c @implementation
public func bc_batch_control_default(_ out: UnsafeMutablePointer<bc_batch_control>?, _ size: Int) -> bc_status {
    abiCall { try writeDefault(defaultBatchControl, out, size, "bc_batch_control") }
}

@c @implementation
public func bc_trainer_set_batch_control(_ trainer: OpaquePointer?, _ control: UnsafePointer<bc_batch_control>?) -> bc_status {
    abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer")
        try t.trainer.setBatchControl(try batchOptions(control))
    }
}

@c @implementation
public func bc_trainer_get_batch_stats(_ trainer: OpaquePointer?, _ out: UnsafeMutablePointer<bc_batch_stats>?) -> bc_status {
    abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer").trainer
        let out = try required(out, "out")
        let s = t.batch.stats
        let v = bc_batch_stats(struct_size: 0, reserved0: 0, step: Int64(s.step), micro_batches: Int64(s.microBatches),
                               next_micro_batches: Int64(t.nextMicroBatches), small_targets: Int64(s.smallTargets),
                               big_targets: Int64(s.bigTargets), small_sq_norm: s.smallSquaredNorm,
                               big_sq_norm: s.bigSquaredNorm, grad_sq: s.gradSquared, trace: s.trace,
                               grad_sq_ema: s.gradSquaredAverage, trace_ema: s.traceAverage, noise_scale: s.noiseScale,
                               kappa: s.kappa, lr_scale: s.lrScale)
        try writeSized(v, to: out, "bc_batch_stats")
    }
}
