import BCCore
import BCKernels
import BCModel
import BCOptim

/// How a trainer runs.
package struct TrainerOptions: Equatable, Sendable {
    /// Token budget of one micro-batch (rows of one forward/backward pass).
    package var microBatchTokens = 2048
    /// Micro-batches per optimizer step (gradient accumulation).
    package var accumulationSteps = 1
    /// Activation checkpointing: keep only each layer's input and recompute the layer's
    /// forward in backward (less memory, ~one more forward of time).
    package var recompute = false
    /// The most memory the trainer may add to the loaded model, in bytes; nil: the
    /// machine's available memory (MemAvailable).
    package var memoryLimit: Int? = nil
    /// Optimizer state slots per parameter the memory estimate counts (AdamW: 2).
    package var optimizerSlots = 2
    /// LoRA: train low-rank adapters of this shape on the frozen, packed base (only the
    /// adapters' A and B are parameters); nil: full fine-tuning.
    package var lora: LoRAConfig? = nil
    /// Asynchronous mode: each step applies the gradient of D steps ago (0 = off,
    /// at most 64; TrainerDelay.swift states the rule).
    package var gradientDelay = 0
    /// bf16 compute: the projections' products of training and evaluation passes read
    /// bf16 copies of the weights and bf16-rounded activations and gradients, summing
    /// in float32 (`BF16GEMM`); weights, gradients, optimizer state and every other op
    /// stay float32 (mixed precision, as PyTorch's autocast). Needs AVX-512 BF16.
    package var computeBF16 = false

    package init() {}

    package func validate(_ c: ModelConfig) throws {
        guard microBatchTokens > 0, microBatchTokens <= 1 << 20 else {
            throw BatchCoreError.invalid("micro-batch tokens \(microBatchTokens) outside 1...\(1 << 20)")
        }
        guard accumulationSteps > 0, accumulationSteps <= 1 << 16 else {
            throw BatchCoreError.invalid("accumulation steps \(accumulationSteps) outside 1...\(1 << 16)")
        }
        guard optimizerSlots >= 0, optimizerSlots <= 8 else {
            throw BatchCoreError.invalid("optimizer slots \(optimizerSlots) outside 0...8")
        }
        if let m = memoryLimit, m < 0 { throw BatchCoreError.invalid("memory limit \(m) is negative") }
        guard gradientDelay >= 0, gradientDelay <= GradientDelayQueue.maxDelay else {
            throw BatchCoreError.invalid("gradient delay \(gradientDelay) outside 0...\(GradientDelayQueue.maxDelay)")
        }
        try lora?.validate()
        if computeBF16 && !BF16GEMM.isSupported {
            throw BatchCoreError(.unsupported, "bf16 compute needs a CPU with AVX-512 BF16 (this one has none): use float32")
        }
    }
}

/// The result of one micro-batch or of a whole step: summed cross-entropy and targets.
package struct TrainingTotals: Equatable, Sendable {
    package var lossSum = 0.0
    package var targets = 0
    package var tokens = 0
    package var microBatches = 0
    package init() {}
    /// Mean loss per target (NaN with no target).
    package var meanLoss: Double { targets > 0 ? lossSum / Double(targets) : .nan }
}

/// Full fine-tuning (or LoRA training, `TrainerOptions.lora`) of a loaded model: forward + backward of packed micro-batches,
/// gradients accumulated over a step, and the step taken by an `Optimizer` (the same
/// one the C ABI exposes) over the model's trainable tensors.
///
/// Loss normalisation: micro-batches accumulate the gradient of the SUMMED cross-entropy;
/// the step divides by the number of target tokens of ALL its micro-batches (the
/// optimizer's gradScale = 1/N), so a step's gradient is that of its mean loss per
/// target token however the tokens fall into micro-batches (not a mean of per-micro-
/// batch means).
///
/// The trainer owns its model's weights while it exists: no other pass (context,
/// engine) may run on the model during `microBatch` or `step`. After a step the packed
/// weights products use are updated, so inference in the same process sees the new
/// weights.
package final class Trainer {
    package let model: Transformer
    package let options: TrainerOptions
    /// The trainable tensors (GGUF names; with LoRA the adapters' A and B, PEFT names),
    /// each with values and gradient.
    package let parameters: [ModelParameter]
    /// The adapters being trained (LoRA), attached to the model's projections.
    package let adapters: LoRAAdapterSet?
    package let memory: TrainerMemory
    /// What a backward pass reads (`.keepLayers`, or `.recompute` with checkpointing),
    /// reserved by `prepareTraining`.
    private let activations: ForwardActivations
    /// Evaluation's forward before training starts (`.evaluation`: one layer's set, two
    /// alternating residuals; the training modes' arithmetic, so an evaluated loss equals
    /// the trained one bit for bit). Made by the first evaluation, freed by
    /// `prepareTraining`; a prepared trainer evaluates on `activations`.
    private var evaluationActivations: ForwardActivations?
    private let gradients = LayerGradients()
    /// Whether the buffers only training needs exist (`prepareTraining`): full fine-tuning's
    /// trainable copies and gradients, and the backward activations. Until the first call
    /// that trains (or hands out a tensor), a trainer holds only what evaluation needs, as
    /// PyTorch makes `.grad` at the first backward.
    package private(set) var isPrepared = false
    /// Accumulated since the last step.
    package private(set) var pending = TrainingTotals()
    /// The training and eval sets when the trainer reads data itself (`loadData`).
    package internal(set) var data: TrainerData?
    /// Optimizer steps taken by `trainStep` (restored by a checkpoint).
    package internal(set) var stepCount = 0
    /// Calls of `step` (taken or skipped; restored by a checkpoint): with the micro-batch
    /// index it keys the LoRA dropout masks (`LoRADropoutPass`).
    package internal(set) var stepCalls = 0
    /// Training tokens processed by `trainStep`.
    package internal(set) var tokensSeen = 0
    /// Data-parallel training: the caller's all-reduce/broadcast (DataParallel.swift); nil: one process.
    package internal(set) var collectives: TrainerCollectives?
    /// The totals of the last `step` (summed over the ranks when data-parallel), also when skipped.
    package private(set) var lastStepTotals = TrainingTotals()
    /// Batch-size control and the gradient noise scale (TrainerBatchSize.swift).
    package internal(set) var batch = TrainerBatchState()
    /// Gradient delay (TrainerDelay.swift).
    let delayState: TrainerDelayState

    /// The trainable tensors of a full fine-tune: every tensor of the model.
    static func selectParameters(_ w: ModelWeights, _ o: TrainerOptions) -> [ModelParameter] { w.parameters }

    /// States the memory need (`memory`), checks it against the limit, then attaches the
    /// LoRA adapters (if any); what only training needs comes at the first call that
    /// trains (`prepareTraining`), evaluation's one-layer set at the first evaluation. On
    /// any failure nothing stays allocated and the model is as before.
    package init(model: Transformer, options: TrainerOptions) throws {
        try options.validate(model.config)
        if options.lora == nil, let q = model.weights.projections.first(where: { $0.quantized != nil }) {
            throw BatchCoreError(.unsupported, "full fine-tuning needs float32 weights; the model holds "
                + "\(q.storage.type) blocks: load it with bc_model_params.weights = BC_MODEL_WEIGHTS_F32 (CLI --dequantize)")
        }
        let memory = try TrainerMemory(model: model, options: options, optimizerSlots: options.optimizerSlots)
        let limit = options.memoryLimit ?? TrainerMemory.available()
        if let limit, memory.added > limit {
            throw BatchCoreError(.outOfMemory, "training needs \(mib(memory.added)) MiB beyond the model's "
                + "\(mib(memory.modelWeights)) MiB (trainable copies \(mib(memory.trainableCopies)), gradients "
                + "\(mib(memory.gradients)), activations \(mib(memory.activations)), backward buffers "
                + "\(mib(memory.backwardBuffers)), optimizer state \(mib(memory.optimizerState)), delayed gradients "
                + "\(mib(memory.delayedGradients))); "
                + "\(mib(limit)) MiB are available — use fewer micro-batch tokens, recompute (checkpointing) or a smaller gradient delay")
        }
        guard !model.weights.hasTrainer else { throw BatchCoreError.badState("the model is already being trained") }
        let adapters = try options.lora.map { try LoRAAdapterSet(fresh: $0, model: model.config) }
        do {
            if let adapters { try adapters.attach(to: model.weights) }
            if options.computeBF16 { for m in model.weights.projections { try m.enableBF16() } }
            try gradients.reserve(model.config, rows: options.microBatchTokens, targetRows: options.microBatchTokens)
        } catch {
            for m in model.weights.projections { m.dropBF16() }
            adapters?.detach(from: model.weights)
            throw error
        }
        model.weights.hasTrainer = true
        self.adapters = adapters
        self.model = model
        self.options = options
        self.memory = memory
        self.activations = ForwardActivations(mode: options.recompute ? .recompute : .keepLayers)
        parameters = adapters?.parameters ?? Self.selectParameters(model.weights, options)
        delayState = TrainerDelayState(delay: options.gradientDelay, floats: parameters.reduce(0) { $0 + $1.count })
    }

    /// Makes what training needs and evaluation does not (idempotent): the trainable
    /// copies and gradients of a full fine-tune (`ModelWeights.makeTrainable`) and the
    /// backward activations of a full micro-batch. Every call that trains, steps, hands
    /// out or checkpoints a tensor runs it first. The need was checked when the trainer
    /// was made (`memory`); an allocation that fails now throws `.outOfMemory` and
    /// nothing changes.
    package func prepareTraining() throws {
        if isPrepared { return }
        do {
            if adapters == nil { try model.weights.makeTrainable() }
            try activations.reserve(model.config, rows: options.microBatchTokens, logitRows: options.microBatchTokens)
        } catch {
            if adapters == nil { model.weights.dropTrainable() }
            throw error
        }
        isPrepared = true
        evaluationActivations = nil
    }

    deinit {
        for m in model.weights.projections { m.dropBF16() }
        if let adapters { adapters.detach(from: model.weights) } else { model.weights.dropTrainable() }
        model.weights.hasTrainer = false
    }

    /// Forward + backward of one micro-batch (whole documents, at most
    /// `microBatchTokens` rows), adding the gradient of its summed loss to the step's.
    /// Bad input throws before any gradient changes.
    @discardableResult
    package func microBatch(_ batch: DocumentBatch, targets: [Int32]) throws -> TrainingTotals {
        guard batch.count <= options.microBatchTokens else {
            throw BatchCoreError.invalid("micro-batch of \(batch.count) tokens; the budget is \(options.microBatchTokens)")
        }
        try prepareTraining()
        let t = try model.trainingPass(batch, targets: targets, lossScale: 1, activations: activations, gradients: gradients,
                                       dropout: dropoutPass)
        var out = TrainingTotals()
        out.lossSum = t.lossSum
        out.targets = t.targets
        out.tokens = batch.count
        out.microBatches = 1
        pending.lossSum += out.lossSum
        pending.targets += out.targets
        pending.tokens += out.tokens
        pending.microBatches += 1
        return out
    }

    /// The next micro-batch's LoRA dropout masks: (LoRA seed, `stepCalls`, global
    /// micro-batch index = rank · accumulation steps + this rank's micro-batches so far);
    /// nil without LoRA dropout.
    package var dropoutPass: LoRADropoutPass? {
        guard let l = options.lora, l.dropout > 0 else { return nil }
        return LoRADropoutPass(seed: l.seed, step: stepCalls, microBatch: rank * options.accumulationSteps + pending.microBatches)
    }

    /// Registers every trainable tensor with `optimizer` in `group` (names as GGUF).
    package func register(in optimizer: Optimizer, group: Int) throws {
        try prepareTraining()
        for p in parameters {
            guard let v = p.values, let g = p.gradient else { throw BatchCoreError(.internal, "\(p.name) is not trainable") }
            try optimizer.addTensor(group: group, name: p.name, param: v, grad: g, count: p.count)
        }
    }

    /// Ends the step: the optimizer steps with gradScale = 1/N (N = targets of all the
    /// step's micro-batches; times the caller's gradScale), the packed weights are updated,
    /// and the gradients zeroed. A non-finite loss or gradient skips the step: weights and
    /// optimizer state stay untouched, the gradients are discarded, and `.nonFinite` is
    /// thrown. A step with no target is skipped the same way (`.badState`).
    @discardableResult
    package func step(_ optimizer: Optimizer, options o: OptimizerStepOptions = .init()) throws
        -> (totals: TrainingTotals, report: OptimizerStepReport) {
        var totals = pending
        defer {
            discardGradients()
            stepCalls += 1
        }
        delayState.lastApplied = false
        if collectives != nil { totals = try allReduceStep(totals) }   // global totals, summed gradients
        lastStepTotals = totals
        guard totals.targets > 0 else { throw BatchCoreError.badState("the step has no target token (no micro-batch with a target since the last step)") }
        guard totals.lossSum.isFinite else {
            throw BatchCoreError(.nonFinite, "non-finite loss (\(totals.lossSum)); step skipped, weights unchanged")
        }
        if let q = delayState.queue {
            return (totals, try delayedStep(q, optimizer, totals: totals, options: o))
        }
        var opts = o
        opts.gradScale = o.gradScale / Double(totals.targets)
        opts.checkFinite = true
        let report = try withBatchLearningRate(optimizer) { try optimizer.step(opts) }
        delayState.lastApplied = true
        try syncWeights()
        return (totals, report)
    }

    /// Zeroes every gradient and forgets the pending totals.
    package func discardGradients() {
        for p in parameters { p.gradient?.update(repeating: 0, count: p.count) }
        pending = TrainingTotals()
        batch.pendingLRScale = nil
    }

    /// Makes products use the trainable copies' current values (after an optimizer
    /// changed them, or a checkpoint was loaded into them).
    package func syncWeights() throws {
        for m in model.weights.projections where m.isTrainable { try m.syncPacked() }
    }

    /// Summed loss and targets of a batch without gradients (evaluation).
    package func evaluate(_ batch: DocumentBatch, targets: [Int32]) throws -> TrainingTotals {
        guard batch.count <= options.microBatchTokens else {
            throw BatchCoreError.invalid("evaluation batch of \(batch.count) tokens; the budget is \(options.microBatchTokens)")
        }
        let a: ForwardActivations
        if isPrepared {
            a = activations
        } else if let e = evaluationActivations {
            a = e
        } else {
            a = ForwardActivations(mode: .evaluation)
            try a.reserve(model.config, rows: options.microBatchTokens, logitRows: options.microBatchTokens)
            evaluationActivations = a
        }
        let t = try model.loss(batch, targets: targets, activations: a, gradients: gradients)
        var out = TrainingTotals()
        out.lossSum = t.lossSum
        out.targets = t.targets
        out.tokens = batch.count
        out.microBatches = 1
        return out
    }
}

func mib(_ bytes: Int) -> Int { (bytes + (1 << 20) - 1) >> 20 }
