import BCCore
import BCFormats
import BCModel
import BCOptim
import BCTrain
import Foundation
import Testing

/// batchcore's LoRA against PEFT itself (fixtures from tools/reference/lora_fixtures.py:
/// PEFT's own save_pretrained of adapters with random non-zero A and B on all seven
/// modules of Tests/fixtures/train/tiny_tied, plain, rsLoRA and rank/alpha_pattern, with
/// PEFT's float64 logits, loss and A/B gradients on the packed micro-batch):
/// batchcore reads the PEFT directory; the merged model's logits agree with PEFT's within
/// 1e-4 relative (max|diff| / max|ref|), the trainer's loss within 1e-6 and every A/B
/// gradient within 1e-4 per tensor. After one AdamW step the adapter batchcore writes,
/// read back, gives the same logits bit for bit; with BATCHCORE_LORA_VERIFY_OUT=DIR the
/// test also writes DIR/<case>/{adapter/, logits.f32} for `lora_fixtures.py --verify`.
@Suite(.serialized) struct LoRAFidelityTests {
    static func reference(_ name: String) throws -> (dir: String, json: [String: Any]) {
        let dir = Repo.path("Tests/fixtures/lora/" + name)
        let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/reference.json"))
        return (dir, try JSONSerialization.jsonObject(with: data) as! [String: Any])
    }

    static func floats(_ path: String) throws -> [Float] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return data.withUnsafeBytes { raw in (0..<data.count / 4).map { raw.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) } }
    }

    /// Target-row logits of `m` with `set` merged (scale 1).
    static func logits(_ m: Transformer, _ set: LoRAAdapterSet, _ b: DocumentBatch, _ targets: [Int32]) throws -> [Float] {
        var batch = b
        batch.wantLogits = targets.map { $0 >= 0 }
        let n = batch.wantLogits.filter { $0 }.count
        var out = [Float](repeating: 0, count: n * m.config.vocabSize)
        try set.withMerged(into: m.weights, factor: 1) {
            try out.withUnsafeMutableBufferPointer { try m.forward(documents: batch, logits: $0.baseAddress!) }
        }
        return out
    }

    @Test(arguments: ["plain", "rslora", "pattern"]) func matchesPEFT(name: String) throws {
        let base = try TrainReferenceTests.fixture("tiny_tied")
        let (dir, json) = try Self.reference(name)
        let (model, _) = try HFModel.load(path: base.dir)
        let set = try LoRAAdapterSet.readPEFT(directory: dir, model: model.config)
        let lora = json["lora"] as! [String: Any]
        #expect(set.config.rank == (lora["r"] as! NSNumber).intValue && set.config.rsLoRA == (lora["use_rslora"] as! Bool))
        #expect(set.config.rankPattern.count == (lora["rank_pattern"] as! [String: Any]).count)
        #expect(set.config.alphaPattern.count == (lora["alpha_pattern"] as! [String: Any]).count)
        let (b, targets) = base.documentBatch
        let n = (json["n_targets"] as! NSNumber).intValue

        // Logits of the merged model against PEFT's float64 run.
        let refLogits = try Self.floats(dir + "/target_logits_f64.f32")
        let logits = try Self.logits(model, set, b, targets)
        #expect(logits.count == refLogits.count)
        let logitErr = TrainReferenceTests.relative(logits[...], refLogits[...])
        #expect(logitErr <= 1e-4, "\(name): logits off by \(logitErr)")

        // Loss and the gradients of A and B through the trainer (factored adapters).
        var o = TrainerOptions()
        o.microBatchTokens = 128
        o.lora = set.config
        let t = try Trainer(model: model, options: o)
        let source = Dictionary(uniqueKeysWithValues: set.parameters.map { ($0.name, $0) })
        for p in t.parameters {
            let s = try #require(source[p.name], "\(p.name) in the PEFT file")
            #expect(s.shape == p.shape)
            p.values!.update(from: s.values!, count: p.count)
        }
        let totals = try t.microBatch(b, targets: targets)
        let refLoss = (json["loss_f64"] as! NSNumber).doubleValue
        #expect(totals.targets == n)
        #expect(abs(totals.lossSum / Double(n) - refLoss) <= 1e-6 * refLoss, "\(name): loss \(totals.lossSum / Double(n)) vs \(refLoss)")
        let grads = try Self.floats(dir + "/lora_grads_f64.f32")
        let index = json["tensors"] as! [[String: Any]]
        #expect(index.count == t.parameters.count)
        var worst = 0.0
        for (p, e) in zip(t.parameters, index) {
            #expect(p.name == e["name"] as! String)
            let off = (e["offset"] as! NSNumber).intValue
            let g = UnsafeBufferPointer(start: p.gradient!, count: p.count).map { $0 / Float(n) }
            let r = TrainReferenceTests.relative(g[...], grads[off..<off + p.count])
            worst = max(worst, r)
            #expect(r <= 1e-4, "\(name) \(p.name): gradient off by \(r)")
        }
        print("\(name): logits vs PEFT \(logitErr), loss \(totals.lossSum / Double(n)) vs \(refLoss), worst A/B gradient \(worst)")

        // One AdamW step, then the written adapter reads back to the same logits.
        let opt = Optimizer(algorithm: .adamw)
        var h = OptimizerHyperparameters.defaults(for: .adamw)
        h.lr = 1e-2
        try t.register(in: opt, group: try opt.addGroup(h))
        try t.step(opt)
        let trained = try Self.logits(model, t.adapters!, b, targets)
        #expect(trained != logits)
        let out = ProcessInfo.processInfo.environment["BATCHCORE_LORA_VERIFY_OUT"].map { $0 + "/" + name }
            ?? LoRATrainingTests.tempDir("fid-\(name)")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try t.saveAdapter(out + "/adapter", baseModel: "tiny_tied")
        let back = try LoRAAdapterSet.readPEFT(directory: out + "/adapter", model: model.config)
        #expect(try Self.logits(model, back, b, targets) == trained)
        if ProcessInfo.processInfo.environment["BATCHCORE_LORA_VERIFY_OUT"] != nil {
            try trained.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: out + "/logits.f32")) }
        } else {
            try? FileManager.default.removeItem(atPath: out)
        }
    }
}
