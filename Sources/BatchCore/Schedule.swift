import BCCore
import BCOptim
import CBatchCore

private let defaultSchedule = bc_lr_schedule(
    struct_size: UInt32(MemoryLayout<bc_lr_schedule>.size), kind: Int32(BC_LR_CONSTANT.rawValue), base_lr: 1e-3,
    min_lr: 0, warmup_steps: 0, total_steps: 0, decay_steps: 0)

@c @implementation
public func bc_lr_schedule_default(_ out: UnsafeMutablePointer<bc_lr_schedule>?, _ size: Int) -> bc_status {
    abiCall { try writeDefault(defaultSchedule, out, size, "bc_lr_schedule") }
}

@c @implementation
public func bc_lr_schedule_eval(_ schedule: UnsafePointer<bc_lr_schedule>?, _ step: Int64,
                                _ lr: UnsafeMutablePointer<Double>?) -> bc_status {
    abiCall {
        let schedule = try required(schedule, "schedule")
        let lr = try required(lr, "lr")
        let s = try readParams(schedule, defaults: defaultSchedule, "bc_lr_schedule")
        guard let kind = LearningRateSchedule.Kind(rawValue: s.kind) else {
            throw BatchCoreError.invalid("bc_lr_schedule_eval: unknown schedule kind \(s.kind)")
        }
        let core = LearningRateSchedule(kind: kind, baseLR: s.base_lr, minLR: s.min_lr, warmupSteps: s.warmup_steps,
                                        totalSteps: s.total_steps, decaySteps: s.decay_steps)
        lr.pointee = try core.learningRate(at: step)
    }
}
