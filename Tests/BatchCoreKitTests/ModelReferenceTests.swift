import BCFormats
import BCKV
import BCModel
import Foundation
import Testing

/// The transformer against llama.cpp (llama-cpp-python 0.3.36) running the same
/// SmolLM2-135M-Instruct weights in F32: fixtures from tools/reference/llama_fixtures.py.
/// Our model is loaded from the Q4_1 GGUF the package registry ships and dequantized
/// to float32 at load (`WeightMode.float32`); dequantization is exact, so the weights
/// equal the F32 file's. The native model (Q4_1/Q8_0 blocks, int8 activations) is
/// compared with llama.cpp's own Q4_1 run in QuantModelTests.
///
/// Tolerance: per saved position, max|ours - ref| / max|ref| over the vocabulary <= 1e-3.
@Suite(.serialized, .enabled(if: TestModel.available)) struct ModelReferenceTests {
    static let fixtures = Repo.path("Tests/fixtures/llama")

    static func loadLogits(_ file: String, rows: Int, vocab: Int) throws -> [Float] {
        let data = try Data(contentsOf: URL(fileURLWithPath: "\(fixtures)/\(file)"))
        #expect(data.count == rows * vocab * 4)
        return data.withUnsafeBytes { raw in (0..<rows * vocab).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) } }
    }

    @Test func logitsMatchLlamaCpp() throws {
        let model = try TestModel.sharedFloat32()
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(Self.fixtures)/logits.json"))) as? [String: Any])
        let vocab = model.config.vocabSize
        var worst = 0.0
        for prompt in json["prompts"] as! [[String: Any]] {
            let ids = (prompt["ids"] as! [NSNumber]).map { Int32($0.intValue) }
            let positions = (prompt["positions"] as! [NSNumber]).map(\.intValue)
            let ref = try Self.loadLogits(prompt["file"] as! String, rows: positions.count, vocab: vocab)
            let cache = ContiguousKVCache(layerCount: model.config.layerCount, kvDim: model.config.kvDim, maxLength: 2048)
            var batch = TokenBatch()
            for (p, t) in ids.enumerated() { batch.append(t, position: p, sequence: 0, logits: positions.contains(p)) }
            var out = [Float](repeating: 0, count: positions.count * vocab)
            try out.withUnsafeMutableBufferPointer { try model.forward(batch, cache: cache, logits: $0.baseAddress) }
            for r in positions.indices {
                var maxDiff: Float = 0, maxRef: Float = 0
                for j in 0..<vocab {
                    maxDiff = max(maxDiff, abs(out[r * vocab + j] - ref[r * vocab + j]))
                    maxRef = max(maxRef, abs(ref[r * vocab + j]))
                }
                let rel = Double(maxDiff / maxRef)
                worst = max(worst, rel)
                #expect(rel <= 1e-3, "\(prompt["name"]!) position \(positions[r]): relative error \(rel)")
            }
        }
        print("model reference: worst logits relative error \(worst)")
    }

    /// 64 greedy tokens (argmax, first index on ties), fed back one at a time,
    /// identical to llama.cpp's continuation of the same prompt with the F32 model.
    @Test func greedyContinuationsMatchLlamaCpp() throws {
        let model = try TestModel.sharedFloat32()
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(Self.fixtures)/greedy.json"))) as? [String: Any])
        let vocab = model.config.vocabSize
        for prompt in json["prompts"] as! [[String: Any]] {
            let ids = (prompt["ids"] as! [NSNumber]).map { Int32($0.intValue) }
            let expected = ((prompt["f32"] as! [String: Any])["tokens"] as! [NSNumber]).map { Int32($0.intValue) }
            let cache = ContiguousKVCache(layerCount: model.config.layerCount, kvDim: model.config.kvDim, maxLength: 2048)
            var logits = [Float](repeating: 0, count: vocab)
            var batch = TokenBatch()
            for (p, t) in ids.enumerated() { batch.append(t, position: p, sequence: 0, logits: p == ids.count - 1) }
            var generated: [Int32] = []
            for step in 0..<expected.count {
                try logits.withUnsafeMutableBufferPointer { try model.forward(batch, cache: cache, logits: $0.baseAddress) }
                var best = 0
                for j in 1..<vocab where logits[j] > logits[best] { best = j }
                generated.append(Int32(best))
                batch = TokenBatch()
                batch.append(Int32(best), position: ids.count + step, sequence: 0, logits: true)
            }
            #expect(generated == expected, "\(prompt["name"]!): first difference at \(zip(generated, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? -1)")
        }
    }
}

/// The default model, when present in the cache (make test fetches it).
enum TestModel {
    static let path = (ProcessInfo.processInfo.environment["BATCHCORE_MODEL"])
        ?? (NSHomeDirectory() + "/.cache/batchcore/SmolLM2-135M-Instruct.Q4_1.gguf")
    static var available: Bool { FileManager.default.fileExists(atPath: path) }
    nonisolated(unsafe) private static var cached: Transformer?
    nonisolated(unsafe) private static var cachedFloat32: Transformer?
    /// The model as `bc_model_load` holds it by default (native Q4_1/Q8_0 blocks).
    static func shared() throws -> Transformer {
        if let cached { return cached }
        let m = try Transformer(gguf: try GGUFFile(path: path))
        cached = m
        return m
    }
    /// The model dequantized to float32 (`WeightMode.float32`).
    static func sharedFloat32() throws -> Transformer {
        if let cachedFloat32 { return cachedFloat32 }
        let m = try Transformer(gguf: try GGUFFile(path: path), weights: .float32)
        cachedFloat32 = m
        return m
    }
}
