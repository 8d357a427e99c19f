import BCCore
import BCFormats
import BCKV
import BCKernels
import BCModel
import Testing

/// A tiny random Llama GGUF whose projections are Q4_K, Q5_K, Q6_K, Q5_0, Q5_1 and, in
/// its last layer, F16, BF16, Q8_0, Q4_0, Q4_1 (mixed inside one layer's q/k/v and
/// gate/up stacks, as Q4_K_M files are; the tied embedding/output head Q6_K) loaded natively (blocks resident, int8 activations) and
/// dequantized to float32: the weights are the same values, so the logits differ only by
/// the activation quantization of each projection input (≤ amax/254 per value of a block
/// of 32, a relative error of order 2⁻⁸ per product that the layers carry on).
///
/// Tolerance: per position max|native − f32| / max|f32| over the vocabulary ≤ 0.06
/// (measured 0.029 here, see the printed line; the SmolLM2 Q4_1 test allows 0.1), and
/// the argmax equal at every position but at most one.
@Suite struct KQuantModelTests {
    static let config = ModelConfig(layerCount: 3, embeddingDim: 256, headCount: 4, kvHeadCount: 2, feedForwardDim: 512,
                                    vocabSize: 97, contextLength: 128, ropeBase: 10000, rmsEps: 1e-5)

    /// Per layer: q, k, v, output, gate, up, down formats.
    static let layerFormats: [[QuantFormat]] = [
        [.q4_K, .q5_K, .q6_K, .q5_0, .q5_1, .q4_K, .q6_K],
        [.q6_K, .q4_K, .q5_K, .q4_K, .q4_K, .q5_0, .q5_1],
        [.f16, .bf16, .q8_0, .bf16, .f16, .q4_1, .q4_0],
    ]

    static func gguf(seed: UInt64) throws -> GGUFFile {
        let c = config, d = c.embeddingDim, kvd = c.kvDim, ff = c.feedForwardDim
        var g = SplitMix64(state: seed)
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("llama.block_count", .uint32(UInt32(c.layerCount)))
        w.set("llama.embedding_length", .uint32(UInt32(d)))
        w.set("llama.attention.head_count", .uint32(UInt32(c.headCount)))
        w.set("llama.attention.head_count_kv", .uint32(UInt32(c.kvHeadCount)))
        w.set("llama.feed_forward_length", .uint32(UInt32(ff)))
        w.set("llama.context_length", .uint32(UInt32(c.contextLength)))
        w.set("llama.vocab_size", .uint32(UInt32(c.vocabSize)))
        w.set("llama.attention.layer_norm_rms_epsilon", .float32(c.rmsEps))
        func matrix(_ name: String, _ f: QuantFormat, rows: Int, cols: Int) throws {
            var bytes: [UInt8]
            switch f {
            case .f16, .bf16:
                bytes = []
                for _ in 0..<(rows * cols) {
                    let v = 0.1 * g.uniform(), bits = f == .f16 ? Float16(v).bitPattern : UInt16(v.bitPattern >> 16)
                    bytes += [UInt8(bits & 0xFF), UInt8(bits >> 8)]
                }
            case .q8_0, .q4_0, .q4_1: bytes = QuantKernelTests.randomBlocks(f, rows: rows, cols: cols, &g)
            default: bytes = KQuantKernelTests.randomBlocks(f, blocks: rows * cols / f.blockValues, &g, scale: 0.1)
            }
            try w.addTensor(name: name, dims: [cols, rows], type: GGMLType(rawValue: f.rawValue)!, data: bytes)
        }
        func norm(_ name: String) throws { try w.addTensor(name: name, dims: [d], floats: (0..<d).map { _ in 1 + 0.1 * g.uniform() }) }
        try matrix("token_embd.weight", .q6_K, rows: c.vocabSize, cols: d)
        try norm("output_norm.weight")
        for (l, f) in layerFormats.enumerated() {
            let p = "blk.\(l)."
            try norm(p + "attn_norm.weight")
            try matrix(p + "attn_q.weight", f[0], rows: d, cols: d)
            try matrix(p + "attn_k.weight", f[1], rows: kvd, cols: d)
            try matrix(p + "attn_v.weight", f[2], rows: kvd, cols: d)
            try matrix(p + "attn_output.weight", f[3], rows: d, cols: d)
            try norm(p + "ffn_norm.weight")
            try matrix(p + "ffn_gate.weight", f[4], rows: ff, cols: d)
            try matrix(p + "ffn_up.weight", f[5], rows: ff, cols: d)
            try matrix(p + "ffn_down.weight", f[6], rows: d, cols: ff)
        }
        let bytes = try w.serialize()
        return try bytes.withUnsafeBytes { try GGUFFile(bytes: $0) }
    }

    @Test func nativeLogitsCloseToFloat32() throws {
        let file = try Self.gguf(seed: 0x4B51)
        let native = try Transformer(gguf: file, weights: .native), f32 = try Transformer(gguf: file, weights: .float32)
        // The native model holds every projection in its blocks, the f32 one none.
        let types = Dictionary(uniqueKeysWithValues: native.weights.storageByType.map { ($0.type, $0.bytes) })
        #expect(Set(types.keys) == ["F32", "Q4_K", "Q5_K", "Q6_K", "Q5_0", "Q5_1", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1"], "\(types)")
        #expect(types["F32"] == 4 * 256 * 7, "only the norm gains are float32")
        #expect(f32.weights.storageByType.map(\.type) == ["F32"])
        let vocab = Self.config.vocabSize
        var g = SplitMix64(state: 77)
        let ids = (0..<41).map { _ in Int32(g.next() % UInt64(vocab)) }
        let a = try QuantModelTests.logits(native, ids), b = try QuantModelTests.logits(f32, ids)
        var worst = 0.0, disagree = 0
        for r in ids.indices {
            let ra = a[(r * vocab)..<(r * vocab + vocab)], rb = b[(r * vocab)..<(r * vocab + vocab)]
            var maxDiff: Float = 0, maxRef: Float = 0
            for (x, y) in zip(ra, rb) {
                maxDiff = max(maxDiff, abs(x - y))
                maxRef = max(maxRef, abs(y))
            }
            worst = max(worst, Double(maxDiff / maxRef))
            if ra.indices.max(by: { ra[$0] < ra[$1] }) != rb.indices.max(by: { rb[$0] < rb[$1] }) { disagree += 1 }
        }
        print("k-quant tiny model, native vs f32: worst relative logit error \(worst), argmax differs at \(disagree)/\(ids.count)")
        #expect(worst <= 0.06)
        #expect(disagree <= 1)
    }
}
