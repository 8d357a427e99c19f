import BCCore
import BCModel
import BCOptim
import BCTrain
import Foundation
import Testing

/// Gradient delay (asynchronous mode, TrainerDelay.swift) on the tiny random model:
/// the weights after each step equal, bit for bit, a reference in which the test keeps
/// its own FIFO of gradients and applies the one of step t-D through the same optimizer;
/// D = 0 is the plain step; the FIFO is counted in the memory statement and refused when
/// it does not fit; a checkpoint keeps the FIFO.
@Suite(.serialized) struct TrainerDelayTests {
    static let lengths = [[23, 9], [31], [7, 12, 5], [17, 17], [29, 3], [11, 19], [26]]

    static func batches(seed: UInt64) -> [[[Int32]]] {
        lengths.enumerated().map { i, l in
            LayerForwardTests.randomDocuments(l, vocab: LayerForwardTests.tiny.vocabSize, seed: seed + UInt64(i))
        }
    }

    /// SGD with momentum 0.9 and weight decay: stateful, so a step applied in the wrong
    /// order or with the wrong scale shows.
    static func optimizer(_ t: Trainer, algorithm: OptimizerAlgorithm = .sgd) throws -> Optimizer {
        let opt = Optimizer(algorithm: algorithm)
        var h = OptimizerHyperparameters.defaults(for: algorithm)
        h.lr = 0.05
        h.momentum = 0.9
        h.weightDecay = 0.01
        if algorithm == .adaptiveBraking { h.alpha = 0.5 }
        try t.register(in: opt, group: try opt.addGroup(h))
        return opt
    }

    static func trainer(delay: Int, seed: UInt64 = 71) throws -> Trainer {
        var o = TrainerOptions()
        o.microBatchTokens = 64
        o.gradientDelay = delay
        return try Trainer(model: try LayerForwardTests.tinyModel(seed: seed), options: o)
    }

    /// Bit-equal weights (a Bool, so a failure does not print every tensor).
    static func same(_ a: [String: [Float]], _ b: [String: [Float]]) -> Bool {
        a.count == b.count && a.allSatisfy { k, v in b[k].map { $0.map(\.bitPattern) == v.map(\.bitPattern) } ?? false }
    }

    static func gradients(_ t: Trainer) -> [[Float]] {
        t.parameters.map { Array(UnsafeBufferPointer(start: $0.gradient!, count: $0.count)) }
    }

    @Test(arguments: [OptimizerAlgorithm.sgd, .adaptiveBraking])
    func delayedStepsApplyTheGradientOfDStepsBefore(_ algorithm: OptimizerAlgorithm) throws {
        let d = 2
        let docs = Self.batches(seed: 500)
        let a = try Self.trainer(delay: d), ref = try Self.trainer(delay: 0)
        let optA = try Self.optimizer(a, algorithm: algorithm), optRef = try Self.optimizer(ref, algorithm: algorithm)
        let initial = TrainerTests.weights(a)
        #expect(a.memory.delayedGradients == d * a.memory.gradients)
        var fifo: [(grad: [[Float]], targets: Int)] = []
        for (t, batch) in docs.enumerated() {
            let (b, tg) = TrainerTests.docBatch(batch)
            // The trainer under test.
            try a.microBatch(b, targets: tg)
            let (totals, report) = try a.step(optA)
            // The reference: gradient on the same weights, kept by the test, applied D steps later.
            let r = try ref.microBatch(b, targets: tg)
            #expect(r.targets == totals.targets && r.lossSum == totals.lossSum)   // same weights, same loss
            fifo.append((Self.gradients(ref), r.targets))
            ref.discardGradients()
            if fifo.count > d {
                let old = fifo.removeFirst()
                for (p, g) in zip(ref.parameters, old.grad) { p.gradient!.update(from: g, count: p.count) }
                try optRef.step(OptimizerStepOptions(gradScale: 1 / Double(old.targets)))
                try ref.syncWeights()
                ref.discardGradients()
            }
            #expect(a.lastStepApplied == (t >= d))
            #expect(a.delayedCount == min(t + 1, d))
            #expect(report.step == Int64(max(0, t + 1 - d)))
            let wa = TrainerTests.weights(a), wr = TrainerTests.weights(ref)
            #expect(Self.same(wa, wr), "step \(t + 1): weights differ from the hand-applied delayed reference")
            #expect(Self.same(wa, initial) == (t < d))
        }
    }

    /// D = 0: the plain synchronous step, bit for bit an optimizer step with 1/N.
    @Test func zeroDelayIsThePlainStep() throws {
        let docs = Self.batches(seed: 900)
        let a = try Self.trainer(delay: 0), ref = try Self.trainer(delay: 0)
        let optA = try Self.optimizer(a), optRef = try Self.optimizer(ref)
        #expect(a.memory.delayedGradients == 0 && a.delayedCount == 0)
        for batch in docs.prefix(3) {
            let (b, tg) = TrainerTests.docBatch(batch)
            try a.microBatch(b, targets: tg)
            try a.step(optA)
            #expect(a.lastStepApplied)
            let r = try ref.microBatch(b, targets: tg)
            try optRef.step(OptimizerStepOptions(gradScale: 1 / Double(r.targets)))
            try ref.syncWeights()
            ref.discardGradients()
            #expect(Self.same(TrainerTests.weights(a), TrainerTests.weights(ref)))
        }
    }

    @Test func theFIFOIsCountedAndRefusedWhenItDoesNotFit() throws {
        let m = try LayerForwardTests.tinyModel(seed: 3)
        var o = TrainerOptions()
        o.microBatchTokens = 64
        let base = try TrainerMemory(model: m, options: o, optimizerSlots: 2)
        o.gradientDelay = 64
        let big = try TrainerMemory(model: m, options: o, optimizerSlots: 2)
        #expect(big.delayedGradients == 64 * base.gradients)
        #expect(big.added == base.added + 64 * base.gradients)
        o.memoryLimit = base.added + 10 * base.gradients
        do {
            _ = try Trainer(model: m, options: o)
            Issue.record("a FIFO larger than the limit was accepted")
        } catch let e as BatchCoreError {
            #expect(e.kind == .outOfMemory)
        }
        o.gradientDelay = 10   // fits exactly
        _ = try Trainer(model: m, options: o)
        o.gradientDelay = 65
        #expect(throws: BatchCoreError.self) { try o.validate(m.config) }
        o.gradientDelay = -1
        #expect(throws: BatchCoreError.self) { try o.validate(m.config) }
    }

    /// A checkpoint saved with a non-empty FIFO resumes bit-identically; a trainer with
    /// another delay refuses it and is unchanged.
    @Test func checkpointKeepsTheFIFO() throws {
        let docs = Self.batches(seed: 1300)
        let dir = NSTemporaryDirectory() + "bc-delay-ckpt-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func run(_ t: Trainer, _ opt: Optimizer, _ range: Range<Int>) throws {
            for i in range {
                let (b, tg) = TrainerTests.docBatch(docs[i])
                try t.microBatch(b, targets: tg)
                try t.step(opt)
            }
        }
        let a = try Self.trainer(delay: 3), optA = try Self.optimizer(a)
        try run(a, optA, 0..<4)
        #expect(a.delayedCount == 3)
        try a.saveCheckpoint(dir, optimizer: optA)
        try run(a, optA, 4..<7)
        let expected = TrainerTests.weights(a)

        let c = try Self.trainer(delay: 3, seed: 5), optC = try Self.optimizer(c)
        try c.loadCheckpoint(dir, optimizer: optC)
        #expect(c.delayedCount == 3)
        try run(c, optC, 4..<7)
        #expect(Self.same(TrainerTests.weights(c), expected))

        let other = try Self.trainer(delay: 2, seed: 5), optO = try Self.optimizer(other)
        let before = TrainerTests.weights(other)
        #expect(throws: BatchCoreError.self) { try other.loadCheckpoint(dir, optimizer: optO) }
        #expect(Self.same(TrainerTests.weights(other), before) && other.delayedCount == 0)
    }

    /// A non-finite gradient is refused before it enters the FIFO.
    @Test func nonFiniteGradientIsNotPushed() throws {
        let docs = Self.batches(seed: 1700)
        let a = try Self.trainer(delay: 2), opt = try Self.optimizer(a)
        let (b, tg) = TrainerTests.docBatch(docs[0])
        try a.microBatch(b, targets: tg)
        a.parameters[1].gradient![0] = .nan
        do {
            try a.step(opt)
            Issue.record("a NaN gradient was pushed")
        } catch let e as BatchCoreError {
            #expect(e.kind == .nonFinite)
        }
        #expect(a.delayedCount == 0 && !a.lastStepApplied)
    }
}
