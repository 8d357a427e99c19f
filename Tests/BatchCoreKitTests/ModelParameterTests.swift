import BCFormats
import BCModel
import Foundation
import Testing

/// The parameter list and the tensor-name table against the real GGUF file.
@Suite(.serialized, .enabled(if: TestModel.available)) struct ModelParameterTests {
    /// `ModelWeights.parameters` names exactly the file's tensors, with their shapes, in
    /// table order; a trainable model's parameter values equal the file's dequantized
    /// tensors (stacked parts at the right rows), and every gradient exists.
    @Test func parametersListTheGGUFTensors() throws {
        let file = try GGUFFile(path: TestModel.path)
        let config = try ModelConfig(gguf: file)
        let weights = try ModelWeights(gguf: file, config: config, weights: .float32)
        let params = weights.parameters
        #expect(Set(params.map(\.name)) == Set(file.tensors.map(\.name)))
        #expect(params.count == file.tensors.count)
        #expect(params.map(\.name) == LlamaTensorNames.all(layerCount: config.layerCount, tiedOutput: true).map(\.gguf))
        #expect(params.prefix(4).map(\.name) == ["token_embd.weight", "blk.0.attn_norm.weight", "blk.0.attn_q.weight",
                                                 "blk.0.attn_k.weight"])
        for p in params {
            let info = try #require(file.tensor(named: p.name))
            #expect(Array(p.shape.reversed()) == info.dims, "\(p.name)")
        }
        #expect(weights.parameterCount == file.tensors.reduce(0) { $0 + $1.dims.reduce(1, *) })
        // Projections hold only their packed copy until asked.
        #expect(params.filter { if case .rows = $0.storage { return $0.values != nil } else { return false } }.isEmpty)

        try weights.makeTrainable()
        defer { weights.dropTrainable() }
        for name in ["token_embd.weight", "blk.0.attn_q.weight", "blk.3.attn_k.weight", "blk.3.attn_v.weight",
                     "blk.7.ffn_up.weight", "blk.7.ffn_gate.weight", "blk.29.ffn_down.weight", "blk.2.ffn_norm.weight",
                     "output_norm.weight"] {
            let p = try #require(params.first { $0.name == name })
            let info = try #require(file.tensor(named: name))
            var ref = [Float](repeating: .nan, count: p.count)
            try ref.withUnsafeMutableBufferPointer {
                try dequantize(type: info.type, data: try file.tensorData(name), count: p.count, into: $0.baseAddress!)
            }
            let values = try #require(p.values), grad = try #require(p.gradient)
            #expect(Array(UnsafeBufferPointer(start: values, count: p.count)).map(\.bitPattern) == ref.map(\.bitPattern),
                    "\(name) values")
            #expect(UnsafeBufferPointer(start: grad, count: p.count).allSatisfy { $0 == 0 }, "\(name) gradient")
        }
    }

    /// The table's Hugging Face names are transformers' LlamaForCausalLM names, and the
    /// q/k (only) carry the RoPE row permutation.
    @Test func tensorNameTable() throws {
        let c = ModelConfig(layerCount: 2, embeddingDim: 64, headCount: 4, kvHeadCount: 2, feedForwardDim: 96,
                            vocabSize: 50, contextLength: 32)
        let names = LlamaTensorNames.all(layerCount: 2, tiedOutput: false)
        #expect(names.map(\.huggingFace) == [
            "model.embed_tokens.weight",
            "model.layers.0.input_layernorm.weight", "model.layers.0.self_attn.q_proj.weight",
            "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight",
            "model.layers.0.self_attn.o_proj.weight", "model.layers.0.post_attention_layernorm.weight",
            "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
            "model.layers.1.input_layernorm.weight", "model.layers.1.self_attn.q_proj.weight",
            "model.layers.1.self_attn.k_proj.weight", "model.layers.1.self_attn.v_proj.weight",
            "model.layers.1.self_attn.o_proj.weight", "model.layers.1.post_attention_layernorm.weight",
            "model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight", "model.layers.1.mlp.down_proj.weight",
            "model.norm.weight", "lm_head.weight",
        ])
        #expect(names.filter { $0.tensor.ropeHeads(c) != nil }.map(\.gguf)
                == ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.1.attn_q.weight", "blk.1.attn_k.weight"])
        #expect(LlamaTensor.q.ropeHeads(c) == 4 && LlamaTensor.k.ropeHeads(c) == 2)
        #expect(LlamaTensor.k.shape(c) == (32, 64) && LlamaTensor.down.shape(c) == (64, 96))
    }
}
