import BCKV
import BCModel
import Foundation
import Testing

/// A llama.cpp GGUF LoRA adapter written by batchcore (bc_trainer_save_adapter_gguf:
/// rank 2 on q,k,v,o,gate,up,down of every layer, alpha 4, random non-zero A and B;
/// Tests/fixtures/llama/lora/adapter.gguf) loaded by llama.cpp (llama-cpp-python 0.3.36,
/// llama_adapter_lora_init + llama_set_adapters_lora, scale 1) on the same base, against
/// batchcore serving the same file (`LoRAAdapterSet.readGGUF` → `ServingAdapter`, every
/// row of the batch in its group). Fixtures: tools/reference/llama_adapter_fixtures.py.
@Suite(.serialized, .enabled(if: TestModel.available)) struct LlamaAdapterFidelityTests {
    static let dir = Repo.path("Tests/fixtures/llama/lora")

    static func fixture() throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(dir)/adapter_logits.json"))) as? [String: Any])
    }

    /// Logits of every position of `ids` with the adapter on every row.
    static func served(_ lm: LanguageModel, _ adapter: ServingAdapter, _ ids: [Int32]) throws -> [Float] {
        let c = lm.config
        let cache = ContiguousKVCache(layerCount: c.layerCount, kvDim: c.kvDim, maxLength: 1024)
        var batch = TokenBatch()
        for (p, t) in ids.enumerated() { batch.append(t, position: p, sequence: 0, logits: true) }
        let adapters = try BatchAdapters(perRow: Array(repeating: (adapter, Float(1)), count: ids.count), model: lm)
        var out = [Float](repeating: 0, count: ids.count * c.vocabSize)
        try out.withUnsafeMutableBufferPointer { try lm.transformer.forward(batch, cache: cache, logits: $0.baseAddress, adapters: adapters) }
        return out
    }

    /// F32 base (the Q4_1 file dequantized, as llama.cpp's F32 GGUF): the last row's
    /// logits within max|diff| / max|ref| ≤ 1e-3 of llama.cpp's — the bound of the base
    /// model's own comparison (ModelReferenceTests; measured there ≤ ~1e-5 relative), as
    /// the adapter adds only f32 products of rank 2 (llama.cpp: W·x + (alpha/r)·B·(A·x),
    /// batchcore the same sum in another order). The adapter must move llama.cpp's logits
    /// far more than that (else the test could not fail), and the argmax is compared at
    /// every position.
    @Test func float32BaseMatchesLlamaCpp() throws {
        let json = try Self.fixture()
        let lm = try LanguageModel(path: TestModel.path, weights: .float32)
        let adapter = try ServingAdapter(set: try LoRAAdapterSet.readGGUF(path: "\(Self.dir)/adapter.gguf", model: lm.config), model: lm)
        let vocab = lm.config.vocabSize
        for p in json["prompts"] as! [[String: Any]] {
            let ids = (p["ids"] as! [NSNumber]).map { Int32($0.intValue) }
            let f = p["f32"] as! [String: Any]
            let ref = try ModelReferenceTests.loadLogits("lora/\(f["file"] as! String)", rows: 1, vocab: vocab)
            let ours = try Self.served(lm, adapter, ids)
            let last = (ids.count - 1) * vocab
            var maxDiff: Float = 0, maxRef: Float = 0
            for j in 0..<vocab {
                maxDiff = max(maxDiff, abs(ours[last + j] - ref[j]))
                maxRef = max(maxRef, abs(ref[j]))
            }
            let effect = (f["adapter_effect_max_abs_last"] as! NSNumber).floatValue
            print("\(p["name"]!): max|batchcore - llama.cpp| with the adapter \(maxDiff) (relative \(maxDiff / maxRef)); the adapter moves llama.cpp's last logits by \(effect)")
            #expect(maxDiff / maxRef <= 1e-3, "\(p["name"]!): relative \(maxDiff / maxRef)")
            // Measured effects 0.29–0.40 on the last rows: ≥ 9× the bound.
            #expect(effect >= 5 * 1e-3 * maxRef, "the adapter's effect \(effect) is too small to test")
            // Every position: llama.cpp's top-8 logits within the same absolute bound, and
            // its argmax wherever its top-2 are not within twice that.
            let top = f["top8_all_positions"] as! [[[NSNumber]]]
            var worstTop: Float = 0
            for (pos, entries) in top.enumerated() {
                let row = ours[(pos * vocab)..<(pos * vocab + vocab)]
                for e in entries { worstTop = max(worstTop, abs(row[pos * vocab + e[0].intValue] - e[1].floatValue)) }
                if entries[0][1].floatValue - entries[1][1].floatValue > 2e-3 * maxRef {
                    let best = row.indices.max { row[$0] < row[$1] }! - pos * vocab
                    #expect(best == entries[0][0].intValue, "\(p["name"]!) position \(pos)")
                }
            }
            print("\(p["name"]!): top-8 logits at \(top.count) positions within \(worstTop) of llama.cpp's")
            #expect(worstTop <= 1e-3 * maxRef)
        }
    }

    /// The native Q4_1 base with the adapter against llama.cpp's Q4_1 run with it: the
    /// same int8-activation difference as without an adapter (LlamaQuantFidelityTests),
    /// so the argmax is compared where llama.cpp's top-1 leads by more than 3.0 (twice
    /// the bound on top logits there).
    @Test func nativeBaseFollowsLlamaCpp() throws {
        let json = try Self.fixture()
        let lm = try LanguageModel(path: TestModel.path)
        let adapter = try ServingAdapter(set: try LoRAAdapterSet.readGGUF(path: "\(Self.dir)/adapter.gguf", model: lm.config), model: lm)
        let vocab = lm.config.vocabSize
        var agree = 0, positions = 0, worst: Float = 0
        for p in json["prompts"] as! [[String: Any]] {
            let ids = (p["ids"] as! [NSNumber]).map { Int32($0.intValue) }
            let top = (p["q4_1"] as! [String: Any])["top8_all_positions"] as! [[[NSNumber]]]
            let ours = try Self.served(lm, adapter, ids)
            for (pos, entries) in top.enumerated() {
                let row = ours[(pos * vocab)..<(pos * vocab + vocab)]
                for e in entries { worst = max(worst, abs(row[pos * vocab + e[0].intValue] - e[1].floatValue)) }
                let best = row.indices.max { row[$0] < row[$1] }! - pos * vocab
                positions += 1
                if best == entries[0][0].intValue { agree += 1 }
                if entries[0][1].floatValue - entries[1][1].floatValue > 3.0 {
                    #expect(best == entries[0][0].intValue, "\(p["name"]!) position \(pos)")
                }
            }
        }
        print("Q4_1 native + adapter vs llama.cpp Q4_1 + adapter: argmax \(agree)/\(positions), top-8 max |diff| \(worst)")
        #expect(worst <= 1.5)
    }
}
