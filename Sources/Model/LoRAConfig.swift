import BCCore

/// A projection a LoRA adapter can target, with PEFT's module name for Llama. The raw
/// value is the bit of `bc_trainer_params.lora_targets` (BC_LORA_Q = 1 << 0 ...).
package enum LoRATarget: Int, CaseIterable, Sendable, Comparable {
    case q = 0, k, v, o, gate, up, down

    package static func < (a: LoRATarget, b: LoRATarget) -> Bool { a.rawValue < b.rawValue }

    /// The bit in a target mask.
    package var bit: UInt32 { 1 << UInt32(rawValue) }

    /// The model tensor the adapter updates.
    package var tensor: LlamaTensor {
        switch self {
        case .q: return .q
        case .k: return .k
        case .v: return .v
        case .o: return .attentionOutput
        case .gate: return .gate
        case .up: return .up
        case .down: return .down
        }
    }

    /// PEFT's `target_modules` entry ("q_proj", ..., "down_proj").
    package var moduleName: String {
        switch self {
        case .q: return "q_proj"
        case .k: return "k_proj"
        case .v: return "v_proj"
        case .o: return "o_proj"
        case .gate: return "gate_proj"
        case .up: return "up_proj"
        case .down: return "down_proj"
        }
    }

    /// The module's path in a PEFT LlamaForCausalLM adapter file, without ".lora_A.weight".
    package func peftPath(layer: Int) -> String {
        let block = self.rawValue <= LoRATarget.o.rawValue ? "self_attn" : "mlp"
        return "base_model.model.model.layers.\(layer).\(block).\(moduleName)"
    }

    package init?(moduleName: String) {
        guard let t = Self.allCases.first(where: { $0.moduleName == moduleName }) else { return nil }
        self = t
    }

    /// The targets of a bit mask; nil when it has bits beyond `down`.
    package static func from(mask: UInt32) -> [LoRATarget]? {
        guard mask >> UInt32(allCases.count) == 0 else { return nil }
        return allCases.filter { mask & $0.bit != 0 }
    }
}

/// The shape of a set of LoRA adapters (PEFT's LoraConfig subset batchcore trains):
/// rank r and alpha per target module (`rankPattern`/`alphaPattern` override the
/// defaults per module name, as PEFT's rank_pattern/alpha_pattern with module keys),
/// scale alpha/r or alpha/√r (rsLoRA), the modules of every layer, and the seed of A's
/// initialisation (also the dropout masks' seed). `dropout`: PEFT's lora_dropout, the
/// probability p of dropping each input value of the low-rank path in training
/// (`TrainingAdapter`, `DropoutOp`); evaluation and serving never drop.
package struct LoRAConfig: Equatable, Sendable {
    package var rank = 8
    package var alpha = 16.0
    package var rsLoRA = false
    package var dropout = 0.0
    package var targets: [LoRATarget] = [.q, .v]
    package var rankPattern: [LoRATarget: Int] = [:]
    package var alphaPattern: [LoRATarget: Double] = [:]
    package var seed: UInt64 = 0

    package init() {}

    package func rank(_ t: LoRATarget) -> Int { rankPattern[t] ?? rank }
    package func alpha(_ t: LoRATarget) -> Double { alphaPattern[t] ?? alpha }
    package func scale(_ t: LoRATarget) -> Float { LoRASlot.scale(alpha: alpha(t), rank: rank(t), rsLoRA: rsLoRA) }

    /// Throws `.invalidArgument` for a rank outside 1...LoRASlot.maxRank, a non-finite
    /// alpha, no target, a repeated target, a pattern for a module not targeted, or a
    /// dropout outside 0 ≤ p < 1.
    package func validate() throws {
        guard dropout >= 0, dropout < 1 else { throw BatchCoreError.invalid("LoRA dropout \(dropout) outside 0 ≤ p < 1") }
        guard !targets.isEmpty else { throw BatchCoreError.invalid("LoRA needs at least one target module") }
        guard Set(targets).count == targets.count else { throw BatchCoreError.invalid("LoRA target modules repeat") }
        for t in LoRATarget.allCases {
            let r = rank(t), a = alpha(t)
            guard r >= 1, r <= LoRASlot.maxRank else {
                throw BatchCoreError.invalid("LoRA rank \(r) of \(t.moduleName) outside 1...\(LoRASlot.maxRank)")
            }
            guard a.isFinite, abs(a) < 1e30 else { throw BatchCoreError.invalid("LoRA alpha \(a) of \(t.moduleName) is not finite") }
        }
        for t in Set(rankPattern.keys).union(alphaPattern.keys) where !targets.contains(t) {
            throw BatchCoreError.invalid("LoRA rank/alpha pattern for \(t.moduleName), which is not a target")
        }
    }

    /// The adapters' values (A and B of every targeted module of every layer).
    package func parameterCount(_ c: ModelConfig) -> Int {
        targets.reduce(0) { sum, t in
            let s = t.tensor.shape(c), r = rank(t)
            return sum + c.layerCount * r * (s.rows + s.cols)
        }
    }
}
