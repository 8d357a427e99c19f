import BCCore
import BCKernels
import BCModel
#if canImport(Glibc)
import Glibc
#endif

/// What a trainer needs in memory, in bytes, stated before anything is allocated
/// (`Trainer.init` checks it against the limit and fails with nothing allocated).
/// P = trainable values, T = micro-batch tokens.
package struct TrainerMemory: Equatable, Sendable {
    /// The model's weights as loaded (packed projections + vectors): already resident.
    package var modelWeights = 0
    /// Trainable float32 copies of the projections (4·P, row-major, beside the packed
    /// copy); with LoRA the adapters' A and B instead (the base stays packed only).
    package var trainableCopies = 0
    /// Gradients (4·P).
    package var gradients = 0
    /// Forward activations a backward pass reads (per layer, or one layer + residuals
    /// when recomputing), for T rows. (Evaluating before training uses a smaller set,
    /// one layer and two residuals, freed when training starts.)
    package var activations = 0
    /// Backward buffers (one layer's gradients + one chunk of logits).
    package var backwardBuffers = 0
    /// Optimizer state (slots · 4·P), for the optimizer named when estimating.
    package var optimizerState = 0
    /// The gradient-delay FIFO: D gradient sets (D · 4·P; TrainerDelay.swift).
    package var delayedGradients = 0

    /// Bytes the trainer adds to the loaded model.
    package var added: Int { trainableCopies + gradients + activations + backwardBuffers + optimizerState + delayedGradients }
    /// Everything, the model's own weights included.
    package var total: Int { modelWeights + added }

    /// The estimate for `model` with `options` and an optimizer keeping `optimizerSlots`
    /// float32 buffers per parameter (AdamW 2, SGD with momentum 1, Lion 1, ...).
    /// Throws `.outOfMemory` when a size overflows.
    package init(model: Transformer, options: TrainerOptions, optimizerSlots: Int) throws {
        let c = model.config, t = options.microBatchTokens
        let params = options.lora == nil ? Trainer.selectParameters(model.weights, options) : []
        var projections = 0, vectors = 0, adapters = options.lora?.parameterCount(c) ?? 0, values = adapters
        var seen = Set<ObjectIdentifier>()
        for p in params {
            values += p.count
            switch p.storage {
            case .rows(let m, _): if seen.insert(ObjectIdentifier(m)).inserted { projections += m.count }
            case .vector(let v): vectors += v.count
            case .adapter: adapters += p.count
            }
        }
        let modes: ForwardActivations.Mode = options.recompute ? .recompute : .keepLayers
        guard let a = ForwardActivations.floats(c, rows: t, logitRows: t, mode: modes),
              let g = LayerGradients.floats(c, rows: t, targetRows: t) else {
            throw BatchCoreError(.outOfMemory, "a micro-batch of \(t) tokens does not fit in memory")
        }
        modelWeights = model.weights.parameterCount * 4
        // bf16 compute: each projection's two bf16 layouts (BF16Weights), frozen or not.
        let bf16 = options.computeBF16 ? model.weights.projections.reduce(0) { $0 + BF16Weights.byteCount(rows: $1.rows, cols: $1.cols) } : 0
        trainableCopies = (projections + adapters) * 4 + bf16
        gradients = (projections + vectors + adapters) * 4
        activations = a * 4
        backwardBuffers = g * 4
        optimizerState = max(0, optimizerSlots) * values * 4
        let (d, o) = max(0, options.gradientDelay).multipliedReportingOverflow(by: gradients)
        guard !o else { throw BatchCoreError(.outOfMemory, "a gradient delay of \(options.gradientDelay) steps does not fit in memory") }
        delayedGradients = d
    }

    /// MemAvailable of /proc/meminfo in bytes, or nil when it cannot be read.
    package static func available() -> Int? {
        guard let f = fopen("/proc/meminfo", "r") else { return nil }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 256)
        while fgets(&line, 256, f) != nil {
            let s = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if s.hasPrefix("MemAvailable:") {
                let kb = s.dropFirst(13).split(separator: " ").first.flatMap { Int($0) }
                return kb.map { $0 * 1024 }
            }
        }
        return nil
    }
}

