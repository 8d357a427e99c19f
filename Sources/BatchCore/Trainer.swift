import BCCore
import BCModel
import BCOptim
import BCTrain
import CBatchCore
#if canImport(Glibc)
import Glibc
#endif

/// A trainer behind a `bc_trainer *`: the core trainer, the model it holds a reference
/// to, and the tensors' names as C strings (valid until the handle is freed).
final class TrainerHandle {
    let model: LanguageModel
    let trainer: Trainer
    let names: [UnsafeMutablePointer<CChar>]

    init(model: LanguageModel, trainer: Trainer) throws {
        self.model = model
        self.trainer = trainer
        var names: [UnsafeMutablePointer<CChar>] = []
        for p in trainer.parameters {
            guard let s = strdup(p.name) else {
                for n in names { free(n) }
                throw BatchCoreError(.outOfMemory, "cannot copy the tensor names")
            }
            names.append(s)
        }
        self.names = names
    }

    deinit { for n in names { free(n) } }
}

private var defaultTrainerParams: bc_trainer_params {
    let o = TrainerOptions()
    return bc_trainer_params(struct_size: UInt32(MemoryLayout<bc_trainer_params>.size),
                             micro_batch_tokens: UInt32(o.microBatchTokens), accumulation_steps: UInt32(o.accumulationSteps),
                             recompute: o.recompute ? 1 : 0, optimizer_slots: UInt32(o.optimizerSlots), reserved0: 0,
                             memory_limit: 0, lora_rank: 0, lora_alpha: 16, lora_targets: LoRATarget.q.bit | LoRATarget.v.bit,
                             use_rslora: 0, lora_seed: 0, gradient_delay: 0, reserved1: 0,
                             lora_dropout: 0, compute_type: UInt32(BC_COMPUTE_F32))
}

private func trainerOptions(_ params: UnsafePointer<bc_trainer_params>?) throws -> TrainerOptions {
    let p = try readParams(params, defaults: defaultTrainerParams, "bc_trainer_params")
    guard p.recompute == 0 || p.recompute == 1 else { throw BatchCoreError.invalid("recompute is \(p.recompute); use 0 or 1") }
    guard p.reserved0 == 0 else { throw BatchCoreError.invalid("bc_trainer_params.reserved0 must be 0") }
    guard p.reserved1 == 0 else { throw BatchCoreError.invalid("bc_trainer_params.reserved1 must be 0") }
    guard p.compute_type == UInt32(BC_COMPUTE_F32) || p.compute_type == UInt32(BC_COMPUTE_BF16) else {
        throw BatchCoreError.invalid("compute_type \(p.compute_type): use BC_COMPUTE_F32 or BC_COMPUTE_BF16")
    }
    guard p.lora_dropout >= 0, p.lora_dropout < 1 else {
        throw BatchCoreError.invalid("lora_dropout \(p.lora_dropout) outside 0 <= p < 1")
    }
    guard p.lora_dropout == 0 || p.lora_rank > 0 else { throw BatchCoreError.invalid("lora_dropout needs lora_rank > 0") }
    guard p.memory_limit <= UInt64(Int.max) else { throw BatchCoreError.invalid("memory_limit \(p.memory_limit) is too large") }
    var o = TrainerOptions()
    o.microBatchTokens = Int(p.micro_batch_tokens)
    o.accumulationSteps = Int(p.accumulation_steps)
    o.recompute = p.recompute != 0
    o.optimizerSlots = Int(p.optimizer_slots)
    o.memoryLimit = p.memory_limit == 0 ? nil : Int(p.memory_limit)
    o.gradientDelay = Int(p.gradient_delay)   // TrainerOptions.validate checks the bound
    o.computeBF16 = p.compute_type == UInt32(BC_COMPUTE_BF16)
    if p.lora_rank > 0 {
        guard p.use_rslora == 0 || p.use_rslora == 1 else { throw BatchCoreError.invalid("use_rslora is \(p.use_rslora); use 0 or 1") }
        guard p.lora_rank <= UInt32(LoRASlot.maxRank) else {
            throw BatchCoreError.invalid("lora_rank \(p.lora_rank) outside 0...\(LoRASlot.maxRank)")
        }
        guard p.lora_alpha.isFinite else { throw BatchCoreError.invalid("lora_alpha \(p.lora_alpha) is not finite") }
        guard let targets = LoRATarget.from(mask: p.lora_targets), !targets.isEmpty else {
            throw BatchCoreError.invalid("lora_targets 0x\(String(p.lora_targets, radix: 16)): use a non-empty set of BC_LORA_* bits")
        }
        var l = LoRAConfig()
        l.rank = Int(p.lora_rank)
        l.alpha = Double(p.lora_alpha)
        l.rsLoRA = p.use_rslora != 0
        l.targets = targets
        l.seed = p.lora_seed
        // The float's shortest decimal (0.05f → 0.05, not 0.0500000007), as adapter_config.json shows it.
        l.dropout = Double("\(p.lora_dropout)") ?? Double(p.lora_dropout)
        o.lora = l
    }
    return o
}

/// The batch a `bc_train_batch` describes (every pointer and count checked).
private func documentBatch(_ batch: UnsafePointer<bc_train_batch>?, budget: Int) throws -> (DocumentBatch, [Int32]) {
    let b = try readParams(required(batch, "batch"), defaults: bc_train_batch(), "bc_train_batch",
                           minimumSize: MemoryLayout<bc_train_batch>.size)
    guard b.reserved0 == 0 else { throw BatchCoreError.invalid("bc_train_batch.reserved0 must be 0") }
    let n = Int(b.n_tokens)
    guard n > 0 else { throw BatchCoreError.invalid("the batch has no token") }
    guard n <= budget else { throw BatchCoreError.invalid("the batch has \(n) tokens; micro_batch_tokens is \(budget)") }
    let tokens = try required(b.tokens, "batch->tokens"), targets = try required(b.targets, "batch->targets")
    var lengths: [Int]
    if let l = b.document_lengths {
        guard b.n_documents > 0, Int(b.n_documents) <= n else {
            throw BatchCoreError.invalid("n_documents is \(b.n_documents) for \(n) tokens")
        }
        lengths = (0..<Int(b.n_documents)).map { Int(l[$0]) }
    } else {
        guard b.n_documents == 0 else { throw BatchCoreError.invalid("n_documents is \(b.n_documents) with document_lengths NULL") }
        lengths = [n]
    }
    let docs = DocumentBatch(tokens: Array(UnsafeBufferPointer(start: tokens, count: n)), documentLengths: lengths,
                             wantLogits: [Bool](repeating: false, count: n))
    return (docs, Array(UnsafeBufferPointer(start: targets, count: n)))
}

private func result(_ t: TrainingTotals) -> bc_train_result {
    bc_train_result(struct_size: 0, reserved0: 0, loss_sum: t.lossSum, targets: Int64(t.targets), tokens: Int64(t.tokens),
                    micro_batches: Int64(t.microBatches), loss: t.meanLoss)
}

/// Throws unless `optimizer` holds every trainable tensor of `trainer` (bc_trainer_register).
private func requireRegistered(_ trainer: Trainer, in optimizer: Optimizer) throws {
    let ids = Set(optimizer.tensors.map(\.name))
    guard trainer.parameters.allSatisfy({ ids.contains($0.name) }) else {
        throw BatchCoreError.invalid("the optimizer does not hold the trainer's tensors (bc_trainer_register)")
    }
}

/// Checks an output struct's struct_size before any work, so a bad one fails first.
private func checkSized<T>(_ p: UnsafeMutablePointer<T>?, _ name: StaticString) throws {
    guard let p else { return }
    let size = UnsafeRawPointer(p).load(as: UInt32.self)
    guard size >= 4, size <= 1 << 16 else { throw BatchCoreError.invalid("\(name).struct_size is \(size); set it to sizeof(\(name))") }
}

@c @implementation
public func bc_trainer_params_default(_ out: UnsafeMutablePointer<bc_trainer_params>?, _ size: Int) -> bc_status {
    abiCall { try writeDefault(defaultTrainerParams, out, size, "bc_trainer_params") }
}

@c @implementation
public func bc_trainer_estimate(_ model: OpaquePointer?, _ params: UnsafePointer<bc_trainer_params>?,
                                _ out: UnsafeMutablePointer<bc_trainer_memory>?) -> bc_status {
    abiCall {
        let m = try object(model, as: LanguageModel.self, "model")
        let out = try required(out, "out")
        let o = try trainerOptions(params)
        try o.validate(m.config)
        let e = try TrainerMemory(model: m.transformer, options: o, optimizerSlots: o.optimizerSlots)
        let v = bc_trainer_memory(struct_size: 0, reserved0: 0, model_weights: UInt64(e.modelWeights),
                                  trainable_copies: UInt64(e.trainableCopies), gradients: UInt64(e.gradients),
                                  activations: UInt64(e.activations), backward_buffers: UInt64(e.backwardBuffers),
                                  optimizer_state: UInt64(e.optimizerState), added: UInt64(e.added),
                                  delayed_gradients: UInt64(e.delayedGradients))
        try writeSized(v, to: out, "bc_trainer_memory")
    }
}

@c @implementation
public func bc_trainer_create(_ model: OpaquePointer?, _ params: UnsafePointer<bc_trainer_params>?,
                              _ out: UnsafeMutablePointer<OpaquePointer?>?) -> bc_status {
    abiCall {
        let m = try object(model, as: LanguageModel.self, "model")
        let out = try required(out, "out")
        let o = try trainerOptions(params)
        let t = try Trainer(model: m.transformer, options: o)
        out.pointee = retainHandle(try TrainerHandle(model: m, trainer: t))
    }
}

@c @implementation
public func bc_trainer_free(_ trainer: OpaquePointer?) {
    releaseHandle(trainer, as: TrainerHandle.self)
}

@c @implementation
public func bc_trainer_tensor_count(_ trainer: OpaquePointer?, _ count: UnsafeMutablePointer<UInt32>?) -> bc_status {
    abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer")
        try required(count, "count").pointee = UInt32(t.trainer.parameters.count)
    }
}

@c @implementation
public func bc_trainer_get_tensor(_ trainer: OpaquePointer?, _ index: UInt32,
                                  _ out: UnsafeMutablePointer<bc_trainer_tensor>?) -> bc_status {
    abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer")
        let out = try required(out, "out")
        let ps = t.trainer.parameters
        guard Int(index) < ps.count else { throw BatchCoreError.invalid("tensor \(index) of \(ps.count)") }
        try t.trainer.prepareTraining()   // the values and gradient handed out exist from now on
        let p = ps[Int(index)]
        guard let v = p.values, let g = p.gradient else { throw BatchCoreError(.internal, "\(p.name) is not trainable") }
        let rows = p.shape.count == 2 ? p.shape[0] : 1
        let r = bc_trainer_tensor(struct_size: 0, reserved0: 0, name: UnsafePointer(t.names[Int(index)]), values: v,
                                  grad: g, count: Int64(p.count), rows: Int64(rows), cols: Int64(p.shape.last ?? 0))
        try writeSized(r, to: out, "bc_trainer_tensor")
    }
}

@c @implementation
public func bc_trainer_register(_ trainer: OpaquePointer?, _ opt: OpaquePointer?, _ group: UInt32) -> bc_status {
    abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer")
        let o = try object(opt, as: Optimizer.self, "opt")
        guard Int(group) < o.groups.count else { throw BatchCoreError.invalid("group \(group) of \(o.groups.count)") }
        let names = Set(o.tensors.map(\.name))
        if let clash = t.trainer.parameters.first(where: { names.contains($0.name) }) {
            throw BatchCoreError.invalid("the optimizer already has a tensor named '\(clash.name)'")
        }
        try t.trainer.register(in: o, group: Int(group))
    }
}

@c @implementation
public func bc_trainer_micro_batch(_ trainer: OpaquePointer?, _ batch: UnsafePointer<bc_train_batch>?,
                                   _ out: UnsafeMutablePointer<bc_train_result>?) -> bc_status {
    abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer")
        try checkSized(out, "bc_train_result")
        let (b, targets) = try documentBatch(batch, budget: t.trainer.options.microBatchTokens)
        let r = try t.trainer.microBatch(b, targets: targets)
        if let out { try writeSized(result(r), to: out, "bc_train_result") }
    }
}

@c @implementation
public func bc_trainer_step(_ trainer: OpaquePointer?, _ opt: OpaquePointer?, _ params: UnsafePointer<bc_optim_step_params>?,
                            _ totals: UnsafeMutablePointer<bc_train_result>?,
                            _ out: UnsafeMutablePointer<bc_optim_step_result>?) -> bc_status {
    var pending: TrainingTotals?
    var skipped: bc_optim_step_result?
    let status = abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer")
        let o = try object(opt, as: Optimizer.self, "opt")
        try checkSized(totals, "bc_train_result")
        try checkSized(out, "bc_optim_step_result")
        let p = try readParams(params, defaults: defaultStepParams, "bc_optim_step_params")
        try requireRegistered(t.trainer, in: o)
        pending = t.trainer.pending
        do {
            let (stepTotals, report) = try t.trainer.step(o, options: OptimizerStepOptions(gradScale: p.grad_scale,
                                                                                          maxGradNorm: p.max_grad_norm))
            pending = stepTotals   // data-parallel: summed over the ranks
            if let out {
                try writeSized(bc_optim_step_result(struct_size: 0, reserved0: 0, grad_norm: report.gradNorm,
                                                    clip_coef: report.clipCoefficient, step: report.step, skipped: 0,
                                                    reserved1: 0, applied: t.trainer.lastStepApplied ? 1 : 0,
                                                    reserved2: 0), to: out, "bc_optim_step_result")
            }
        } catch let e as BatchCoreError where e.kind == .nonFinite {
            pending = t.trainer.lastStepTotals
            skipped = bc_optim_step_result(struct_size: 0, reserved0: 0, grad_norm: o.lastGradNorm, clip_coef: 1,
                                           step: o.groups.first?.step ?? 0, skipped: 1, reserved1: 0,
                                           applied: 0, reserved2: 0)
            throw e
        }
    }
    // Filled on success and on a skipped (non-finite) step, as bc_optimizer_step does.
    if let totals, let pending, status == BC_OK || skipped != nil { _ = try? writeSized(result(pending), to: totals, "bc_train_result") }
    if let out, let skipped { _ = try? writeSized(skipped, to: out, "bc_optim_step_result") }
    return status
}

@c @implementation
public func bc_trainer_discard(_ trainer: OpaquePointer?) -> bc_status {
    abiCall { try object(trainer, as: TrainerHandle.self, "trainer").trainer.discardGradients() }
}

@c @implementation
public func bc_trainer_sync(_ trainer: OpaquePointer?) -> bc_status {
    abiCall { try object(trainer, as: TrainerHandle.self, "trainer").trainer.syncWeights() }
}

@c @implementation
public func bc_trainer_evaluate(_ trainer: OpaquePointer?, _ batch: UnsafePointer<bc_train_batch>?,
                                _ out: UnsafeMutablePointer<bc_train_result>?) -> bc_status {
    abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer")
        let out = try required(out, "out")
        try checkSized(out, "bc_train_result")
        let (b, targets) = try documentBatch(batch, budget: t.trainer.options.microBatchTokens)
        try writeSized(result(try t.trainer.evaluate(b, targets: targets)), to: out, "bc_train_result")
    }
}

@c @implementation
public func bc_trainer_pending(_ trainer: OpaquePointer?, _ out: UnsafeMutablePointer<bc_train_result>?) -> bc_status {
    abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer")
        try writeSized(result(t.trainer.pending), to: try required(out, "out"), "bc_train_result")
    }
}

// MARK: data files

private var defaultDataParams: bc_train_data_params {
    bc_train_data_params(struct_size: UInt32(MemoryLayout<bc_train_data_params>.size), max_tokens: 0, chat_targets: 0,
                         truncate: 0, skip_invalid: 0, eval_fraction: 0, seed: 0, epochs: 1, reserved0: 0)
}

/// The loader options and the split/shuffle settings a `bc_train_data_params` describes.
private func dataOptions(_ params: UnsafePointer<bc_train_data_params>?, budget: Int, context: Int) throws
    -> (DataLoadOptions, evalFraction: Double, seed: UInt64, epochs: Int) {
    let p = try readParams(params, defaults: defaultDataParams, "bc_train_data_params")
    for (name, v) in [("chat_targets", p.chat_targets), ("truncate", p.truncate), ("skip_invalid", p.skip_invalid)]
    where v != 0 && v != 1 {
        throw BatchCoreError.invalid("\(name) is \(v); use 0 or 1")
    }
    guard p.reserved0 == 0 else { throw BatchCoreError.invalid("bc_train_data_params.reserved0 must be 0") }
    guard p.eval_fraction.isFinite, p.eval_fraction >= 0, p.eval_fraction < 1 else {
        throw BatchCoreError.invalid("eval_fraction \(p.eval_fraction) outside 0 ..< 1")
    }
    guard p.epochs >= 1 else { throw BatchCoreError.invalid("epochs is 0; at least 1") }
    // An example must fit one micro-batch and the model's context.
    let maxTokens = min(p.max_tokens == 0 ? budget : Int(p.max_tokens), budget, context)
    let o = DataLoadOptions(maxTokens: maxTokens, chatTargets: p.chat_targets == 1 ? .allTokens : .assistantOnly,
                            overLength: p.truncate == 1 ? .truncate : .error,
                            invalidExample: p.skip_invalid == 1 ? .skip : .error)
    return (o, Double(p.eval_fraction), p.seed, Int(p.epochs))
}

@c @implementation
public func bc_train_data_params_default(_ out: UnsafeMutablePointer<bc_train_data_params>?, _ size: Int) -> bc_status {
    abiCall { try writeDefault(defaultDataParams, out, size, "bc_train_data_params") }
}

/// bc_trainer_load_data (`eval` false) and bc_trainer_load_eval (`eval` true): read the
/// file, then describe the set in *info.
private func loadSet(_ trainer: OpaquePointer?, _ path: UnsafePointer<CChar>?,
                     _ params: UnsafePointer<bc_train_data_params>?, _ info: UnsafeMutablePointer<bc_train_data_info>?,
                     eval: Bool) -> bc_status {
    abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer")
        let path = String(cString: try required(path, "path"))
        try checkSized(info, "bc_train_data_info")
        let (o, fraction, seed, epochs) = try dataOptions(params, budget: t.trainer.options.microBatchTokens,
                                                          context: t.model.config.contextLength)
        let v: bc_train_data_info
        if eval {
            let set = try t.trainer.loadEval(path: path, tokenizer: t.model.tokenizer, options: o)
            v = bc_train_data_info(struct_size: 0, reserved0: 0, examples: Int64(set.count), tokens: Int64(set.tokenCount),
                                   targets: Int64(set.targetCount), truncated: 0, skipped: 0,
                                   eval_examples: Int64(set.count), steps: Int64(t.trainer.data?.totalSteps ?? 0))
        } else {
            let d = try t.trainer.loadData(path: path, tokenizer: t.model.tokenizer, options: o, evalFraction: fraction,
                                           seed: seed, epochs: epochs)
            v = bc_train_data_info(struct_size: 0, reserved0: 0, examples: Int64(d.train.count),
                                   tokens: Int64(d.train.tokenCount), targets: Int64(d.train.targetCount),
                                   truncated: Int64(d.report.truncated), skipped: Int64(d.report.skipped.count),
                                   eval_examples: Int64(d.eval?.count ?? 0), steps: Int64(d.totalSteps))
        }
        if let info { try writeSized(v, to: info, "bc_train_data_info") }
    }
}

@c @implementation
public func bc_trainer_load_data(_ trainer: OpaquePointer?, _ path: UnsafePointer<CChar>?,
                                 _ params: UnsafePointer<bc_train_data_params>?,
                                 _ info: UnsafeMutablePointer<bc_train_data_info>?) -> bc_status {
    loadSet(trainer, path, params, info, eval: false)
}

@c @implementation
public func bc_trainer_load_eval(_ trainer: OpaquePointer?, _ path: UnsafePointer<CChar>?,
                                 _ params: UnsafePointer<bc_train_data_params>?,
                                 _ info: UnsafeMutablePointer<bc_train_data_info>?) -> bc_status {
    loadSet(trainer, path, params, info, eval: true)
}

@c @implementation
public func bc_trainer_train_step(_ trainer: OpaquePointer?, _ opt: OpaquePointer?,
                                  _ params: UnsafePointer<bc_optim_step_params>?,
                                  _ totals: UnsafeMutablePointer<bc_train_result>?,
                                  _ out: UnsafeMutablePointer<bc_optim_step_result>?) -> bc_status {
    // Everything bc_trainer_step would refuse is checked before the data moves.
    let ready = abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer")
        let o = try object(opt, as: Optimizer.self, "opt")
        try checkSized(totals, "bc_train_result")
        try checkSized(out, "bc_optim_step_result")
        _ = try readParams(params, defaults: defaultStepParams, "bc_optim_step_params")
        try requireRegistered(t.trainer, in: o)
        guard let d = t.trainer.data else { throw BatchCoreError.badState("no training data: call bc_trainer_load_data first") }
        guard try t.trainer.accumulateNextStep() else {
            throw BatchCoreError(.notFound, "every epoch is done (\(d.totalSteps) steps)")
        }
    }
    return ready == BC_OK ? bc_trainer_step(trainer, opt, params, totals, out) : ready
}

@c @implementation
public func bc_trainer_get_progress(_ trainer: OpaquePointer?, _ out: UnsafeMutablePointer<bc_train_progress>?) -> bc_status {
    abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer").trainer
        let out = try required(out, "out")
        let p = t.data?.packer.position ?? DataPosition()
        try writeSized(bc_train_progress(struct_size: 0, reserved0: 0, step: Int64(t.stepCount),
                                         steps: Int64(t.data?.totalSteps ?? 0), epoch: Int64(p.epoch),
                                         example: Int64(p.index), tokens: Int64(t.tokensSeen)),
                       to: out, "bc_train_progress")
    }
}

@c @implementation
public func bc_trainer_evaluate_data(_ trainer: OpaquePointer?, _ path: UnsafePointer<CChar>?,
                                     _ params: UnsafePointer<bc_train_data_params>?,
                                     _ out: UnsafeMutablePointer<bc_train_result>?) -> bc_status {
    abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer")
        let out = try required(out, "out")
        try checkSized(out, "bc_train_result")
        let set: TrainingDataset
        if let path {
            let (o, _, _, _) = try dataOptions(params, budget: t.trainer.options.microBatchTokens,
                                                  context: t.model.config.contextLength)
            set = try TrainingDataset.load(path: String(cString: path), tokenizer: t.model.tokenizer, options: o).dataset
        } else {
            guard let e = t.trainer.data?.eval else { throw BatchCoreError.badState("no eval set: load one or hold out eval_fraction") }
            set = e
        }
        try writeSized(result(try t.trainer.evaluate(set)), to: out, "bc_train_result")
    }
}

@c @implementation
public func bc_trainer_save_model(_ trainer: OpaquePointer?, _ path: UnsafePointer<CChar>?,
                                  _ format: bc_weights_format) -> bc_status {
    abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer")
        let path = String(cString: try required(path, "path"))
        try checkWeightsFormat(format)
        if let adapters = t.trainer.adapters {
            try adapters.withMerged(into: t.model.transformer.weights, factor: 1) { try writeWeights(t.model, path, format) }
        } else {
            try writeWeights(t.model, path, format)
        }
    }
}

@c @implementation
public func bc_trainer_save_adapter_gguf(_ trainer: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> bc_status {
    abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer")
        let path = String(cString: try required(path, "path"))
        try t.trainer.saveAdapterGGUF(path)
    }
}

@c @implementation
public func bc_trainer_save_adapter(_ trainer: OpaquePointer?, _ dir: UnsafePointer<CChar>?) -> bc_status {
    abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer")
        let dir = String(cString: try required(dir, "dir"))
        try t.trainer.saveAdapter(dir, baseModel: t.model.path)
    }
}

@c @implementation
public func bc_trainer_save_checkpoint(_ trainer: OpaquePointer?, _ opt: OpaquePointer?,
                                       _ dir: UnsafePointer<CChar>?) -> bc_status {
    abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer")
        let dir = String(cString: try required(dir, "dir"))
        let o = try opt.map { try object($0, as: Optimizer.self, "opt") }
        try t.trainer.saveCheckpoint(dir, optimizer: o)
    }
}

@c @implementation
public func bc_trainer_load_checkpoint(_ trainer: OpaquePointer?, _ opt: OpaquePointer?,
                                       _ dir: UnsafePointer<CChar>?) -> bc_status {
    abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer")
        let dir = String(cString: try required(dir, "dir"))
        let o = try opt.map { try object($0, as: Optimizer.self, "opt") }
        try t.trainer.loadCheckpoint(dir, optimizer: o)
    }
}
