/// The tensors of a Llama-family checkpoint and their names in each format: the one
/// table every loader and writer reads (GGUF, Hugging Face safetensors, adapters).
///
/// Shapes are given as [rows × cols] of the row-major matrix y = x·Wᵀ uses (rows =
/// output features); vectors (norm gains) have rows == 1. GGUF lists dimensions
/// innermost first ([cols, rows]), safetensors outermost first ([rows, cols]).
///
/// RoPE row order: Hugging Face Llama applies RoPE in the "rotate half" (GPT-NeoX)
/// layout — within a head, dimension j pairs with j + headDim/2 — while llama.cpp and
/// batchcore rotate adjacent pairs (2i, 2i+1). So the rows of q_proj and k_proj (and of
/// a LoRA B matrix on them) in a HF file are in a different order than in GGUF: per head
/// of `headDim` rows, HF row t·headDim/2 + j is GGUF row 2j + t (t ∈ {0, 1}). As
/// llama.cpp's HF→GGUF converter does, HF q/k rows are permuted at load
/// (`permuteRoPERows`) and permuted back on export; `ropeHeads` says which tensors.
package enum LlamaTensor: CaseIterable, Sendable {
    case tokenEmbedding
    case attentionNorm, q, k, v, attentionOutput, ffnNorm, gate, up, down
    case outputNorm, output

    /// The tensors every decoder layer has, in table order.
    package static let layerTensors: [LlamaTensor] = [.attentionNorm, .q, .k, .v, .attentionOutput, .ffnNorm, .gate, .up, .down]

    package var isPerLayer: Bool { Self.layerTensors.contains(self) }

    /// GGUF name (llama.cpp's), with "blk.N." before per-layer names.
    package func ggufName(layer: Int) -> String {
        switch self {
        case .tokenEmbedding: return "token_embd.weight"
        case .outputNorm: return "output_norm.weight"
        case .output: return "output.weight"
        case .attentionNorm: return "blk.\(layer).attn_norm.weight"
        case .q: return "blk.\(layer).attn_q.weight"
        case .k: return "blk.\(layer).attn_k.weight"
        case .v: return "blk.\(layer).attn_v.weight"
        case .attentionOutput: return "blk.\(layer).attn_output.weight"
        case .ffnNorm: return "blk.\(layer).ffn_norm.weight"
        case .gate: return "blk.\(layer).ffn_gate.weight"
        case .up: return "blk.\(layer).ffn_up.weight"
        case .down: return "blk.\(layer).ffn_down.weight"
        }
    }

    /// Hugging Face transformers' name (LlamaForCausalLM), with "model.layers.N."
    /// before per-layer names.
    package func huggingFaceName(layer: Int) -> String {
        switch self {
        case .tokenEmbedding: return "model.embed_tokens.weight"
        case .outputNorm: return "model.norm.weight"
        case .output: return "lm_head.weight"
        case .attentionNorm: return "model.layers.\(layer).input_layernorm.weight"
        case .q: return "model.layers.\(layer).self_attn.q_proj.weight"
        case .k: return "model.layers.\(layer).self_attn.k_proj.weight"
        case .v: return "model.layers.\(layer).self_attn.v_proj.weight"
        case .attentionOutput: return "model.layers.\(layer).self_attn.o_proj.weight"
        case .ffnNorm: return "model.layers.\(layer).post_attention_layernorm.weight"
        case .gate: return "model.layers.\(layer).mlp.gate_proj.weight"
        case .up: return "model.layers.\(layer).mlp.up_proj.weight"
        case .down: return "model.layers.\(layer).mlp.down_proj.weight"
        }
    }

    /// [rows × cols] for `c`; rows == 1 for a vector.
    package func shape(_ c: ModelConfig) -> (rows: Int, cols: Int) {
        let d = c.embeddingDim
        switch self {
        case .tokenEmbedding, .output: return (c.vocabSize, d)
        case .attentionNorm, .ffnNorm, .outputNorm: return (1, d)
        case .q, .attentionOutput: return (d, d)
        case .k, .v: return (c.kvDim, d)
        case .gate, .up: return (c.feedForwardDim, d)
        case .down: return (d, c.feedForwardDim)
        }
    }

    /// The number of heads whose rows a HF checkpoint holds in rotate-half order
    /// (q: all query heads, k: the kv heads); nil for every other tensor.
    package func ropeHeads(_ c: ModelConfig) -> Int? {
        switch self {
        case .q: return c.headCount
        case .k: return c.kvHeadCount
        default: return nil
        }
    }
}

/// One tensor of a model: its role, layer (0 for the global ones) and names.
package struct LlamaTensorName: Equatable, Sendable {
    package let tensor: LlamaTensor
    package let layer: Int
    package var gguf: String { tensor.ggufName(layer: layer) }
    package var huggingFace: String { tensor.huggingFaceName(layer: layer) }
}

package enum LlamaTensorNames {
    /// Every tensor of a model with `layerCount` layers in the stable order loaders,
    /// writers and the parameter list use: the token embedding, then per layer
    /// `LlamaTensor.layerTensors`, then the output norm and — unless tied to the
    /// embedding — the output head.
    package static func all(layerCount: Int, tiedOutput: Bool) -> [LlamaTensorName] {
        var names = [LlamaTensorName(tensor: .tokenEmbedding, layer: 0)]
        for l in 0..<max(0, layerCount) {
            for t in LlamaTensor.layerTensors { names.append(LlamaTensorName(tensor: t, layer: l)) }
        }
        names.append(LlamaTensorName(tensor: .outputNorm, layer: 0))
        if !tiedOutput { names.append(LlamaTensorName(tensor: .output, layer: 0)) }
        return names
    }

    /// Reorders the rows of one q or k projection (`heads` heads of `headDim` rows of
    /// `cols`): HF rotate-half order → adjacent-pair (GGUF) order, or back with
    /// `inverse` (see `LlamaTensor`). `src` and `dst` must not overlap.
    package static func permuteRoPERows(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, heads: Int,
                                       headDim: Int, cols: Int, inverse: Bool) {
        let half = headDim / 2
        for h in 0..<heads {
            for j in 0..<half {
                for t in 0..<2 {
                    let pairRow = h * headDim + 2 * j + t
                    let halfRow = h * headDim + t * half + j
                    let (to, from) = inverse ? (halfRow, pairRow) : (pairRow, halfRow)
                    (dst + to * cols).update(from: src + from * cols, count: cols)
                }
            }
        }
    }
}
