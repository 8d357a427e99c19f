import BCCore

/// One set of LoRA adapters over a model: per layer, per target module of `config`, a
/// `LoRASlot` (A [r × in], B [out × r], in memory with q/k B rows in batchcore's RoPE
/// layout, see `LlamaTensor`). Attached to the model's projections as training adapters
/// (`Linear.attachTraining`) at the module's rows of the stacked projection.
package final class LoRAAdapterSet {
    package struct Entry {
        package let layer: Int
        package let target: LoRATarget
        package let slot: LoRASlot
    }

    package let config: LoRAConfig
    package let model: ModelConfig
    /// Layer by layer, targets in `LoRATarget` order.
    package let entries: [Entry]

    /// Adapters from `slots` (layer-major, targets sorted); checked against the shapes.
    package init(config: LoRAConfig, model: ModelConfig, slots: [[LoRASlot]]) throws {
        try config.validate()
        let targets = config.targets.sorted()
        guard slots.count == model.layerCount else {
            throw BatchCoreError.invalid("LoRA: \(slots.count) layers of adapters for a model of \(model.layerCount)")
        }
        var entries: [Entry] = []
        for (l, layer) in slots.enumerated() {
            guard layer.count == targets.count else { throw BatchCoreError.invalid("LoRA: layer \(l) has \(layer.count) adapters") }
            for (t, s) in zip(targets, layer) {
                let shape = t.tensor.shape(model)
                guard s.rows == shape.rows, s.cols == shape.cols, s.rank == config.rank(t) else {
                    throw BatchCoreError.invalid("LoRA \(t.peftPath(layer: l)): \(s.rows) × \(s.cols) rank \(s.rank), expected "
                        + "\(shape.rows) × \(shape.cols) rank \(config.rank(t))")
                }
                entries.append(Entry(layer: l, target: t, slot: s))
            }
        }
        self.config = config
        self.model = model
        self.entries = entries
    }

    /// Fresh adapters as PEFT initialises them (`LoRASlot.init(rows:cols:rank:scale:seed:)`):
    /// A of (layer l, target t) from the seed mixed with (l, t), B = 0.
    package convenience init(fresh config: LoRAConfig, model: ModelConfig) throws {
        try config.validate()
        var slots: [[LoRASlot]] = []
        for l in 0..<model.layerCount {
            slots.append(try config.targets.sorted().map { t in
                let s = t.tensor.shape(model)
                let mix = (UInt64(l) << 8 | UInt64(t.rawValue)) &* 0xD1B5_4A32_D192_ED03
                return try LoRASlot(rows: s.rows, cols: s.cols, rank: config.rank(t), scale: config.scale(t),
                                    seed: config.seed ^ mix)
            })
        }
        try self.init(config: config, model: model, slots: slots)
    }

    /// The trainable tensors, PEFT-named: per adapter lora_A then lora_B.
    package var parameters: [ModelParameter] {
        entries.flatMap { e in
            [ModelParameter(name: e.target.peftPath(layer: e.layer) + ".lora_A.weight", shape: [e.slot.rank, e.slot.cols],
                            storage: .adapter(e.slot, isB: false)),
             ModelParameter(name: e.target.peftPath(layer: e.layer) + ".lora_B.weight", shape: [e.slot.rows, e.slot.rank],
                            storage: .adapter(e.slot, isB: true))]
        }
    }

    /// Gives every slot gradients and attaches it to its rows of `weights`' projections.
    /// Throws `.badState` when a projection already has training adapters; on failure
    /// nothing stays attached or allocated.
    package func attach(to weights: ModelWeights) throws {
        guard weights.config.layerCount == model.layerCount, weights.config.embeddingDim == model.embeddingDim,
              weights.config.kvDim == model.kvDim, weights.config.feedForwardDim == model.feedForwardDim else {
            throw BatchCoreError.invalid("LoRA adapters made for another model shape")
        }
        guard weights.projections.allSatisfy({ $0.trainingAdapters.isEmpty }) else {
            throw BatchCoreError.badState("the model already has training adapters")
        }
        do {
            for e in entries {
                guard case .rows(let m, let first) = weights.location(of: LlamaTensorName(tensor: e.target.tensor, layer: e.layer)) else {
                    throw BatchCoreError(.internal, "LoRA target \(e.target) is not a projection")
                }
                try e.slot.makeTrainable()
                try m.attachTraining(e.slot, firstRow: first, dropout: config.dropout, layer: e.layer, module: e.target.rawValue)
            }
        } catch {
            detach(from: weights)
            throw error
        }
    }

    /// Removes the training adapters from `weights` and frees the gradients.
    package func detach(from weights: ModelWeights) {
        for m in weights.projections { m.detachTraining() }
        for e in entries { e.slot.dropTrainable() }
    }
}
