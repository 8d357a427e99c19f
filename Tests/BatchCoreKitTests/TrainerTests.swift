import BCCore
import BCModel
import BCOptim
import BCTrain
import Foundation
import Testing

/// The trainer over the tiny random model: loss normalisation across micro-batches,
/// skipped non-finite steps, the memory statement and its refusal, weights used by
/// inference after a step. (Flat memory over many steps: Tests/c/test_trainer.c, in its
/// own process — suites here run concurrently and share the process's RSS.)
@Suite(.serialized) struct TrainerTests {
    static func options(tokens: Int = 128) -> TrainerOptions {
        var o = TrainerOptions()
        o.microBatchTokens = tokens
        return o
    }

    static func sgd(_ t: Trainer, lr: Double = 0.1) throws -> Optimizer {
        let opt = Optimizer(algorithm: .sgd)
        var h = OptimizerHyperparameters.defaults(for: .sgd)
        h.lr = lr
        try t.register(in: opt, group: try opt.addGroup(h))
        return opt
    }

    static func weights(_ t: Trainer) -> [String: [Float]] {
        var out: [String: [Float]] = [:]
        for p in t.parameters { out[p.name] = Array(UnsafeBufferPointer(start: p.values!, count: p.count)) }
        return out
    }

    static func docBatch(_ docs: [[Int32]]) -> (DocumentBatch, [Int32]) {
        var b = DocumentBatch()
        var t: [Int32] = []
        for d in docs {
            b.append(document: d, logits: true)
            t += d.indices.map { $0 + 1 < d.count ? d[$0 + 1] : -1 }
        }
        return (b, t)
    }

    /// One step over documents split into two micro-batches of very different target
    /// counts gives the weights of one step over one micro-batch holding them all (the
    /// step's gradient is that of Σloss / N_all), within float summation order.
    @Test func lossIsNormalisedOverTheWholeStep() throws {
        let docs = LayerForwardTests.randomDocuments([40, 6], vocab: LayerForwardTests.tiny.vocabSize, seed: 41)
        func run(_ split: Bool) throws -> ([String: [Float]], TrainingTotals) {
            let m = try LayerForwardTests.tinyModel(seed: 43)
            let t = try Trainer(model: m, options: Self.options())
            let opt = try Self.sgd(t)
            if split {
                let (b1, t1) = Self.docBatch([docs[0]]), (b2, t2) = Self.docBatch([docs[1]])
                try t.microBatch(b1, targets: t1)
                try t.microBatch(b2, targets: t2)
            } else {
                let (b, tg) = Self.docBatch(docs)
                try t.microBatch(b, targets: tg)
            }
            let (totals, _) = try t.step(opt)
            return (Self.weights(t), totals)
        }
        let (one, t1) = try run(false), (two, t2) = try run(true)
        #expect(t1.targets == t2.targets && t1.targets == 39 + 5)
        #expect(abs(t1.meanLoss - t2.meanLoss) <= 1e-9 * t1.meanLoss)
        let base = try LayerForwardTests.tinyModel(seed: 43)
        for p in base.weights.parameters {
            let a = one[p.name]!, b = two[p.name]!
            let scale = a.map(abs).max()!
            #expect(zip(a, b).map { abs($0 - $1) }.max()! <= 1e-6 * scale, "\(p.name)")
        }
    }

    /// A non-finite loss skips the step: weights, optimizer state and step count stay,
    /// the gradients are discarded, and the next good step works.
    @Test func nonFiniteStepIsSkipped() throws {
        let m = try LayerForwardTests.tinyModel(seed: 45)
        let t = try Trainer(model: m, options: Self.options())
        let opt = Optimizer(algorithm: .adamw)
        try t.register(in: opt, group: try opt.addGroup(.defaults(for: .adamw)))
        let (b, tg) = Self.docBatch(LayerForwardTests.randomDocuments([20], vocab: m.config.vocabSize, seed: 2))
        try t.microBatch(b, targets: tg)
        try t.step(opt)
        let before = Self.weights(t)
        // Poison one norm gain: the forward produces NaN.
        let gain = m.weights.layers[1].ffnNorm.data
        let saved = gain[3]
        gain[3] = .nan
        try t.microBatch(b, targets: tg)
        #expect(throws: BatchCoreError.self) { try t.step(opt) }
        gain[3] = saved
        var after = Self.weights(t)
        after["blk.1.ffn_norm.weight"]![3] = saved
        #expect(after == before)
        #expect(opt.groups[0].step == 1)
        #expect(t.pending == TrainingTotals())
        #expect(t.parameters.allSatisfy { p in (0..<p.count).allSatisfy { p.gradient![$0] == 0 } })
        try t.microBatch(b, targets: tg)
        let (_, report) = try t.step(opt)
        #expect(report.step == 2)
    }

    /// The trainer states its memory before allocating; a limit below it is refused with
    /// nothing allocated (the model stays untrainable and usable).
    @Test func memoryIsStatedAndALowLimitRefused() throws {
        let m = try LayerForwardTests.tinyModel(seed: 47)
        var o = Self.options(tokens: 100)
        let estimate = try TrainerMemory(model: m, options: o, optimizerSlots: 2)
        let p = m.weights.parameterCount * 4
        #expect(estimate.gradients == p && estimate.trainableCopies <= p && estimate.optimizerState == 2 * p)
        #expect(estimate.activations > 0 && estimate.backwardBuffers > 0)
        var r = o
        r.recompute = true
        #expect(try TrainerMemory(model: m, options: r, optimizerSlots: 2).activations < estimate.activations)
        o.memoryLimit = estimate.added - 1
        #expect(throws: BatchCoreError.self) { _ = try Trainer(model: m, options: o) }
        #expect(m.weights.parameters.allSatisfy { $0.gradient == nil })
        o.memoryLimit = estimate.added
        let t = try Trainer(model: m, options: o)
        #expect(t.memory == estimate)
        o.microBatchTokens = 0
        #expect(throws: BatchCoreError.self) { _ = try Trainer(model: try LayerForwardTests.tinyModel(seed: 47), options: o) }
    }

    /// Evaluation alone allocates nothing only training needs (trainable copies,
    /// gradients, backward activations: made at the first call that trains, as PyTorch
    /// makes .grad at the first backward), and its loss equals the training pass's bit for
    /// bit and the per-layer (`.keepLayers`) forward's, on a 3-layer model so the
    /// evaluation set's two residual buffers take turns. One trainer per model, prepared
    /// or not.
    @Test func evaluationAloneAllocatesNoTrainingBuffers() throws {
        let m = try LayerForwardTests.tinyModel(layers: 3, seed: 51)
        let (b, tg) = ModelBackwardTests.batch([19, 7, 12], seed: 5, vocab: m.config.vocabSize)
        let reference = try m.loss(b, targets: tg, activations: ForwardActivations(mode: .keepLayers), gradients: LayerGradients())
        let recomputed = try m.loss(b, targets: tg, activations: ForwardActivations(mode: .recompute), gradients: LayerGradients())
        #expect(reference.lossSum == recomputed.lossSum && reference.lossSum.isFinite)
        let c = m.config
        #expect(try #require(ForwardActivations.floats(c, rows: 64, logitRows: 64, mode: .evaluation))
                < (try #require(ForwardActivations.floats(c, rows: 64, logitRows: 64, mode: .recompute))))
        do {
            let t = try Trainer(model: m, options: Self.options())
            #expect(throws: BatchCoreError.self) { _ = try Trainer(model: m, options: Self.options()) }
            let e = try t.evaluate(b, targets: tg)
            #expect(e.lossSum == reference.lossSum, "evaluation \(e.lossSum) vs per-layer forward \(reference.lossSum)")
            #expect(!t.isPrepared)
            #expect(m.weights.projections.allSatisfy { !$0.isTrainable } && t.parameters.allSatisfy { $0.gradient == nil })
            // A training pass refuses evaluation's activations (nothing survives for backward).
            #expect(throws: BatchCoreError.self) {
                _ = try m.trainingPass(b, targets: tg, lossScale: 1, activations: ForwardActivations(mode: .evaluation),
                                       gradients: LayerGradients())
            }
            let tr = try t.microBatch(b, targets: tg)
            #expect(t.isPrepared && tr.lossSum == reference.lossSum)
            #expect(t.parameters.allSatisfy { $0.values != nil && $0.gradient != nil })
            #expect(t.parameters.contains { p in (0..<p.count).contains { p.gradient![$0] != 0 } })
            #expect(try t.evaluate(b, targets: tg).lossSum == reference.lossSum, "evaluating again after a training pass")
            #expect(throws: BatchCoreError.self) { _ = try Trainer(model: m, options: Self.options()) }
        }
        // The trainer gone, the model is free and untrainable again.
        #expect(m.weights.projections.allSatisfy { !$0.isTrainable })
        let again = try Trainer(model: m, options: Self.options())
        _ = try Self.sgd(again)
        #expect(again.isPrepared)
    }

    /// After a step, the serving forward uses the new weights: its logits equal those of
    /// a model loaded with the trained values, and differ from the untrained model's.
    @Test func inferenceSeesTrainedWeights() throws {
        let m = try LayerForwardTests.tinyModel(seed: 49)
        let (b, tg) = Self.docBatch(LayerForwardTests.randomDocuments([24], vocab: m.config.vocabSize, seed: 4))
        let vocab = m.config.vocabSize
        var before = [Float](repeating: 0, count: b.count * vocab)
        try m.forward(documents: b, logits: &before)
        let t = try Trainer(model: m, options: Self.options())
        let opt = try Self.sgd(t, lr: 0.5)
        try t.microBatch(b, targets: tg)
        try t.step(opt)
        var after = [Float](repeating: 0, count: b.count * vocab)
        try m.forward(documents: b, logits: &after)
        #expect(after != before)
        // The packed copy (what products read) equals the trainable copy.
        for p in t.parameters {
            guard case .rows(let lin, let first) = p.storage else { continue }
            var packed = [Float](repeating: 0, count: p.count)
            lin.copyRows(first, count: p.shape[0], into: &packed)
            #expect(packed == Array(UnsafeBufferPointer(start: p.values!, count: p.count)), "\(p.name)")
        }
        // The trained model's loss went down on the batch it stepped on.
        let e0 = try t.evaluate(b, targets: tg)
        #expect(e0.meanLoss.isFinite)
    }
}
