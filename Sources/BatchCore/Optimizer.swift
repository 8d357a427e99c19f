import BCCore
import BCOptim
import CBatchCore

// MARK: conversions

private func algorithm(_ a: bc_optim_algorithm) throws -> OptimizerAlgorithm {
    guard let algo = OptimizerAlgorithm(rawValue: a.rawValue) else {
        throw BatchCoreError.invalid("unknown optimizer algorithm \(a.rawValue)")
    }
    return algo
}

extension bc_optim_hparams {
    init(_ h: OptimizerHyperparameters) {
        self.init(
            struct_size: UInt32(MemoryLayout<bc_optim_hparams>.size), reserved0: 0, lr: h.lr, weight_decay: h.weightDecay,
            beta1: h.beta1, beta2: h.beta2, eps: h.eps, momentum: h.momentum, dampening: h.dampening,
            alpha: h.alpha, lr_decay: h.lrDecay, initial_accumulator_value: h.initialAccumulatorValue,
            max_grad_norm: h.maxGradNorm, nesterov: h.nesterov ? 1 : 0, amsgrad: h.amsgrad ? 1 : 0,
            centered: h.centered ? 1 : 0, maximize: h.maximize ? 1 : 0, grad_averaging: h.gradAveraging ? 1 : 0,
            trust_clip: h.trustClip ? 1 : 0, always_adapt: h.alwaysAdapt ? 1 : 0, reserved1: 0)
    }

    var core: OptimizerHyperparameters {
        OptimizerHyperparameters(
            lr: lr, weightDecay: weight_decay, beta1: beta1, beta2: beta2, eps: eps, momentum: momentum,
            dampening: dampening, alpha: alpha, lrDecay: lr_decay, initialAccumulatorValue: initial_accumulator_value,
            maxGradNorm: max_grad_norm, nesterov: nesterov != 0, amsgrad: amsgrad != 0, centered: centered != 0,
            maximize: maximize != 0, gradAveraging: grad_averaging != 0, trustClip: trust_clip != 0,
            alwaysAdapt: always_adapt != 0)
    }
}

/// Writes `value` into a caller struct of `size` bytes (size from the caller's sizeof).
func writeDefault<T>(_ value: T, _ out: UnsafeMutablePointer<T>?, _ size: Int, _ name: StaticString,
                     in function: StaticString = #function) throws {
    let out = try required(out, "out", in: function)
    guard size >= 4, size <= 1 << 16 else { throw BatchCoreError.invalid("\(name): size \(size) is not sizeof(\(name))") }
    var v = value
    withUnsafeMutableBytes(of: &v) { src in
        src.storeBytes(of: UInt32(size), as: UInt32.self)
        UnsafeMutableRawPointer(out).copyMemory(from: src.baseAddress!, byteCount: min(size, MemoryLayout<T>.size))
    }
}

private func group(_ id: UInt32) -> Int { Int(id) }

// MARK: functions

@c @implementation
public func bc_optim_hparams_default(_ algo: bc_optim_algorithm, _ out: UnsafeMutablePointer<bc_optim_hparams>?,
                                     _ size: Int) -> bc_status {
    abiCall {
        let a = try algorithm(algo)
        try writeDefault(bc_optim_hparams(OptimizerHyperparameters.defaults(for: a)), out, size, "bc_optim_hparams")
    }
}

@c @implementation
public func bc_optimizer_create(_ algo: bc_optim_algorithm, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> bc_status {
    abiCall {
        let out = try required(out, "out")
        out.pointee = retainHandle(Optimizer(algorithm: try algorithm(algo)))
    }
}

@c @implementation
public func bc_optimizer_free(_ opt: OpaquePointer?) {
    releaseHandle(opt, as: Optimizer.self)
}

@c @implementation
public func bc_optimizer_add_group(_ opt: OpaquePointer?, _ hparams: UnsafePointer<bc_optim_hparams>?,
                                   _ groupID: UnsafeMutablePointer<UInt32>?) -> bc_status {
    abiCall {
        let o = try object(opt, as: Optimizer.self, "opt")
        let defaults = bc_optim_hparams(OptimizerHyperparameters.defaults(for: o.algorithm))
        let h = try readParams(hparams, defaults: defaults, "bc_optim_hparams")
        let id = try o.addGroup(h.core)
        put(UInt32(id), groupID)
    }
}

@c @implementation
public func bc_optimizer_add_tensor(_ opt: OpaquePointer?, _ groupID: UInt32, _ name: UnsafePointer<CChar>?,
                                    _ param: UnsafeMutablePointer<Float>?, _ grad: UnsafePointer<Float>?,
                                    _ count: Int64, _ tensorID: UnsafeMutablePointer<UInt32>?) -> bc_status {
    abiCall {
        let o = try object(opt, as: Optimizer.self, "opt")
        let param = try required(param, "param")
        let grad = try required(grad, "grad")
        guard count > 0, count <= Int64(Int.max / 8) else {
            throw BatchCoreError.invalid("bc_optimizer_add_tensor: count must be > 0 (got \(count))")
        }
        let n = name.map { String(cString: $0) } ?? ""
        let id = try o.addTensor(group: group(groupID), name: n, param: param, grad: grad, count: Int(count))
        put(UInt32(id), tensorID)
    }
}

@c @implementation
public func bc_optimizer_get_hparams(_ opt: OpaquePointer?, _ groupID: UInt32,
                                     _ out: UnsafeMutablePointer<bc_optim_hparams>?) -> bc_status {
    abiCall {
        let o = try object(opt, as: Optimizer.self, "opt")
        let out = try required(out, "out")
        let h = try o.hyperparameters(group: group(groupID))
        try writeSized(bc_optim_hparams(h), to: out, "bc_optim_hparams")
    }
}

@c @implementation
public func bc_optimizer_set_hparams(_ opt: OpaquePointer?, _ groupID: UInt32,
                                     _ hparams: UnsafePointer<bc_optim_hparams>?) -> bc_status {
    abiCall {
        let o = try object(opt, as: Optimizer.self, "opt")
        let hparams = try required(hparams, "hparams")
        let current = bc_optim_hparams(try o.hyperparameters(group: group(groupID)))
        let h = try readParams(hparams, defaults: current, "bc_optim_hparams")
        try o.setHyperparameters(h.core, group: group(groupID))
    }
}

@c @implementation
public func bc_optimizer_set_lr(_ opt: OpaquePointer?, _ groupID: UInt32, _ lr: Double) -> bc_status {
    abiCall {
        let o = try object(opt, as: Optimizer.self, "opt")
        try o.setLearningRate(lr, group: groupID == UInt32.max ? nil : group(groupID))
    }
}

let defaultStepParams = bc_optim_step_params(
    struct_size: UInt32(MemoryLayout<bc_optim_step_params>.size), reserved0: 0, grad_scale: 1, max_grad_norm: 0,
    check_finite: 1, reserved1: 0)

@c @implementation
public func bc_optim_step_params_default(_ out: UnsafeMutablePointer<bc_optim_step_params>?, _ size: Int) -> bc_status {
    abiCall { try writeDefault(defaultStepParams, out, size, "bc_optim_step_params") }
}

@c @implementation
public func bc_optimizer_step(_ opt: OpaquePointer?, _ params: UnsafePointer<bc_optim_step_params>?,
                              _ result: UnsafeMutablePointer<bc_optim_step_result>?) -> bc_status {
    var report: OptimizerStepReport?
    var skipped = false
    let status = abiCall {
        let o = try object(opt, as: Optimizer.self, "opt")
        if let result {
            let size = UnsafeRawPointer(result).load(as: UInt32.self)
            guard size >= 4, size <= 1 << 16 else {
                throw BatchCoreError.invalid("bc_optim_step_result.struct_size is \(size); set it to sizeof(bc_optim_step_result)")
            }
        }
        let p = try readParams(params, defaults: defaultStepParams, "bc_optim_step_params")
        let options = OptimizerStepOptions(gradScale: p.grad_scale, maxGradNorm: p.max_grad_norm, checkFinite: p.check_finite != 0)
        do {
            report = try o.step(options)
        } catch let e as BatchCoreError where e.kind == .nonFinite {
            skipped = true
            report = OptimizerStepReport(gradNorm: o.lastGradNorm, clipCoefficient: 1,
                                         step: o.groups.first?.step ?? 0)
            throw e
        }
    }
    if let result, let report {
        let r = bc_optim_step_result(struct_size: 0, reserved0: 0, grad_norm: report.gradNorm,
                                     clip_coef: report.clipCoefficient, step: report.step, skipped: skipped ? 1 : 0,
                                     reserved1: 0, applied: skipped ? 0 : 1, reserved2: 0)
        _ = try? writeSized(r, to: result, "bc_optim_step_result")
    }
    return status
}

@c @implementation
public func bc_optimizer_info(_ opt: OpaquePointer?, _ groups: UnsafeMutablePointer<UInt32>?,
                              _ tensors: UnsafeMutablePointer<UInt32>?, _ parameters: UnsafeMutablePointer<Int64>?) -> bc_status {
    abiCall {
        let o = try object(opt, as: Optimizer.self, "opt")
        guard groups != nil || tensors != nil || parameters != nil else {
            throw BatchCoreError.invalid("bc_optimizer_info: all outputs are NULL")
        }
        put(UInt32(o.groups.count), groups)
        put(UInt32(o.tensors.count), tensors)
        put(Int64(o.parameterCount), parameters)
    }
}

@c @implementation
public func bc_optim_step_result_default(_ out: UnsafeMutablePointer<bc_optim_step_result>?, _ size: Int) -> bc_status {
    abiCall {
        try writeDefault(bc_optim_step_result(struct_size: 0, reserved0: 0, grad_norm: .nan, clip_coef: 1, step: 0,
                                              skipped: 0, reserved1: 0, applied: 0, reserved2: 0), out, size, "bc_optim_step_result")
    }
}

@c @implementation
public func bc_optimizer_get_step(_ opt: OpaquePointer?, _ group: UInt32, _ step: UnsafeMutablePointer<Int64>?) -> bc_status {
    abiCall {
        let o = try object(opt, as: Optimizer.self, "opt")
        let step = try required(step, "step")
        guard Int(group) < o.groups.count else { throw BatchCoreError.invalid("group \(group) of \(o.groups.count)") }
        step.pointee = o.groups[Int(group)].step
    }
}
