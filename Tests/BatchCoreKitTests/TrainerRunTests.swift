import BCCore
import BCFormats
import BCModel
import BCOptim
import BCTokenizer
import BCTrain
import Foundation
import Testing

/// The trainer reading data itself, and checkpoints: a run interrupted by a checkpoint
/// and resumed in a fresh trainer ends with the same bits as the uninterrupted run; a
/// checkpoint of other data (or a damaged one) is refused with nothing changed.
/// Model: the tiny Hugging Face fixture (its tokenizer knows a–z, A–Z, space, '.', ',').
@Suite(.serialized) struct TrainerRunTests {
    static let modelDir = Repo.path("Tests/fixtures/train/tiny_tied")

    static func dataFile(lines: Int, seed: UInt64) throws -> String {
        var rng = SplitMix64(state: seed)
        let words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far", "Away", "big", "red"]
        var text = ""
        for _ in 0..<lines {
            let n = 3 + Int(rng.next() % 9)
            let sentence = (0..<n).map { _ in words[Int(rng.next() % UInt64(words.count))] }.joined(separator: " ")
            text += "{\"text\": \"\(sentence).\"}\n"
        }
        let path = NSTemporaryDirectory() + "bc-train-\(getpid())-\(seed).jsonl"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func run(data: String, steps: Int, checkpointAt: Int? = nil, resumeFrom: String? = nil)
        throws -> (weights: [String: [Float]], steps: Int, losses: [Double]) {
        let (model, tokenizer) = try HFModel.load(path: modelDir)
        var o = TrainerOptions()
        o.microBatchTokens = 48
        o.accumulationSteps = 2
        let t = try Trainer(model: model, options: o)
        _ = try t.loadData(path: data, tokenizer: tokenizer, options: DataLoadOptions(maxTokens: 48), evalFraction: 0.2,
                           seed: 7, epochs: 3)
        let opt = Optimizer(algorithm: .adamw)
        var h = OptimizerHyperparameters.defaults(for: .adamw)
        h.lr = 3e-3
        try t.register(in: opt, group: try opt.addGroup(h))
        if let resumeFrom { try t.loadCheckpoint(resumeFrom, optimizer: opt) }
        var losses: [Double] = []
        while t.stepCount < steps, let (totals, _) = try t.trainStep(opt) {
            losses.append(totals.meanLoss)
            if let c = checkpointAt, t.stepCount == c, let dir = Optional(data + ".ckpt") {
                try t.saveCheckpoint(dir, optimizer: opt)
            }
        }
        var w: [String: [Float]] = [:]
        for p in t.parameters { w[p.name] = Array(UnsafeBufferPointer(start: p.values!, count: p.count)) }
        return (w, t.stepCount, losses)
    }

    @Test func resumedRunIsBitIdentical() throws {
        let data = try Self.dataFile(lines: 40, seed: 3)
        defer { unlink(data); _ = try? FileManager.default.removeItem(atPath: data + ".ckpt") }
        let full = try Self.run(data: data, steps: 8, checkpointAt: 3)
        let resumed = try Self.run(data: data, steps: 8, resumeFrom: data + ".ckpt")
        #expect(full.steps == 8 && resumed.steps == 8)
        #expect(resumed.losses == Array(full.losses.suffix(5)))
        let same = resumed.weights == full.weights
        #expect(same, "the resumed run's weights differ from the uninterrupted run's")
        #expect(full.losses.last! < full.losses.first!, "training lowers the loss: \(full.losses)")
    }

    @Test func checkpointOfOtherDataOrDamagedIsRefused() throws {
        let data = try Self.dataFile(lines: 30, seed: 4), other = try Self.dataFile(lines: 31, seed: 5)
        defer { for p in [data, other, data + ".ckpt"] { _ = try? FileManager.default.removeItem(atPath: p) } }
        _ = try Self.run(data: data, steps: 2, checkpointAt: 2)
        let (model, tokenizer) = try HFModel.load(path: Self.modelDir)
        var o = TrainerOptions()
        o.microBatchTokens = 48
        o.accumulationSteps = 2
        let t = try Trainer(model: model, options: o)
        _ = try t.loadData(path: other, tokenizer: tokenizer, options: DataLoadOptions(maxTokens: 48), evalFraction: 0.2,
                           seed: 7, epochs: 3)
        let opt = Optimizer(algorithm: .adamw)
        try t.register(in: opt, group: try opt.addGroup(.defaults(for: .adamw)))
        let before = t.parameters.map { Array(UnsafeBufferPointer(start: $0.values!, count: $0.count)) }
        #expect(throws: BatchCoreError.self) { try t.loadCheckpoint(data + ".ckpt", optimizer: opt) }
        // Same data, damaged weights file: refused too.
        _ = try t.loadData(path: data, tokenizer: tokenizer, options: DataLoadOptions(maxTokens: 48), evalFraction: 0.2,
                           seed: 7, epochs: 3)
        let weights = data + ".ckpt/weights.safetensors"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: weights))
        bytes = bytes.prefix(bytes.count - 100)
        try bytes.write(to: URL(fileURLWithPath: weights))
        #expect(throws: BatchCoreError.self) { try t.loadCheckpoint(data + ".ckpt", optimizer: opt) }
        let unchanged = t.parameters.map { Array(UnsafeBufferPointer(start: $0.values!, count: $0.count)) } == before
        #expect(unchanged, "a refused checkpoint changed the weights")
        #expect(t.stepCount == 0 && opt.groups[0].step == 0)
        #expect(t.data?.packer.position == DataPosition())
    }

    /// Evaluation of the held-out set and a data set file; the steps count matches the
    /// packing, and stepping past the end returns nil without changing anything.
    @Test func evaluationAndEndOfData() throws {
        let data = try Self.dataFile(lines: 12, seed: 6)
        defer { unlink(data) }
        let (model, tokenizer) = try HFModel.load(path: Self.modelDir)
        var o = TrainerOptions()
        o.microBatchTokens = 64
        let t = try Trainer(model: model, options: o)
        let d = try t.loadData(path: data, tokenizer: tokenizer, options: DataLoadOptions(maxTokens: 64), evalFraction: 0.25,
                               seed: 1, epochs: 1)
        #expect(d.train.count + (d.eval?.count ?? 0) == 12 && (d.eval?.count ?? 0) == 3)
        let opt = Optimizer(algorithm: .sgd)
        try t.register(in: opt, group: try opt.addGroup(.defaults(for: .sgd)))
        var steps = 0
        while try t.trainStep(opt) != nil { steps += 1 }
        #expect(steps == d.totalSteps && t.stepCount == steps)
        #expect(try t.trainStep(opt) == nil)
        let e = try t.evaluate(try #require(t.data?.eval))
        #expect(e.targets == d.eval!.targetCount && e.meanLoss.isFinite)
    }
}
