import BCCore
import BCModel
import BCOptim
import BCTokenizer
import BCTrain
import Foundation
import Testing

/// The trainer's gradient noise scale and batch-size controller on the tiny model
/// (Tests/fixtures/train/tiny_tied): an estimate every step, accumulation changed only
/// at step boundaries, and the step's learning rate scaled by the stated rule.
@Suite(.serialized) struct TrainerBatchSizeTests {
    static func trainer(accumulation: Int) throws -> (Trainer, Tokenizer) {
        let (model, tokenizer) = try HFModel.load(path: TrainerRunTests.modelDir)
        var o = TrainerOptions()
        o.microBatchTokens = 48
        o.accumulationSteps = accumulation
        return (try Trainer(model: model, options: o), tokenizer)
    }

    /// Noise mode, SGD with linear LR scaling: each step reports its micro-batches,
    /// B_small/B_big and a finite noise scale; the step's micro-batches are what the
    /// controller chose at the previous boundary; |G_big|² equals a float64 norm of the
    /// accumulated gradient; and the SGD update is exactly −lr·κ·g/targets (κ =
    /// micro-batches / 2), with the optimizer's rate back at the base after the step.
    @Test func noiseControllerScalesBatchAndLearningRate() throws {
        let data = try TrainerRunTests.dataFile(lines: 400, seed: UInt64.random(in: 1...1 << 40))
        defer { unlink(data) }
        let (t, tokenizer) = try Self.trainer(accumulation: 2)
        _ = try t.loadData(path: data, tokenizer: tokenizer, options: DataLoadOptions(maxTokens: 48, overLength: .truncate), evalFraction: 0,
                           seed: 5, epochs: 4)
        var c = BatchSizeOptions()
        c.mode = .noise
        c.minMicroBatches = 2
        c.maxMicroBatches = 16
        c.warmupSteps = 1
        c.lrScaling = .linear
        try t.setBatchControl(c)
        let opt = Optimizer(algorithm: .sgd)
        var h = OptimizerHyperparameters.defaults(for: .sgd)
        h.lr = 0.05
        try t.register(in: opt, group: try opt.addGroup(h))
        var seen: [Int] = []
        var finite = 0
        var grew = false
        for step in 1...12 {
            let planned = t.nextMicroBatches
            #expect(try t.accumulateNextStep())
            #expect(t.pending.microBatches == planned)
            let s = t.batch.stats
            #expect(s.step == step && s.microBatches == planned)
            #expect(s.bigTargets == t.pending.targets && s.smallTargets > 0 && s.smallTargets < s.bigTargets)
            // Raw estimates every step; B_simple is NaN while the |G|² average is <= 0 or the tr Σ one < 0
            // (early on the tiny model's gradient is mostly noise).
            #expect(s.gradSquared.isFinite && s.trace.isFinite, "step \(step): \(s)")
            #expect(s.noiseScale.isNaN == (s.gradSquaredAverage <= 0 || s.traceAverage < 0), "step \(step): \(s)")
            if s.noiseScale.isFinite { finite += 1 }
            #expect(s.kappa == Double(planned) / 2 && s.lrScale == s.kappa)
            // The next step's choice is made now; pending work does not change it.
            #expect(s.nextMicroBatches == t.nextMicroBatches)
            // ... and it is the controller's rule applied to this step's estimate: toward
            // ⌈B_simple / targets per micro-batch⌉, at most doubling, never shrinking, in [2, 16].
            var want = planned
            if s.noiseScale.isFinite {
                let goal = Int(min(16, (s.noiseScale / (Double(s.bigTargets) / Double(planned))).rounded(.up)))
                want = min(max(min(max(planned, goal), 2 * planned), 2), 16)
            }
            #expect(s.nextMicroBatches == want, "step \(step): B_simple \(s.noiseScale), \(s.bigTargets) targets")
            if want > planned { grew = true }
            #expect(throws: BatchCoreError.self) { try t.setBatchControl(c) }   // not at a boundary
            var big = 0.0
            var grads: [[Float]] = []
            var before: [[Float]] = []
            for p in t.parameters {
                let g = Array(UnsafeBufferPointer(start: p.gradient!, count: p.count))
                for x in g { big += Double(x) * Double(x) }
                grads.append(g)
                before.append(Array(UnsafeBufferPointer(start: p.values!, count: p.count)))
            }
            let n = Double(s.bigTargets)
            let refBig: Double = big / (n * n)
            #expect(abs(s.bigSquaredNorm - refBig) <= 1e-9 * refBig)
            try t.step(opt)
            #expect(try opt.hyperparameters(group: 0).lr == 0.05)
            let rate: Double = 0.05 * s.lrScale / n
            var worst = 0.0
            for (k, p) in t.parameters.enumerated() {
                for i in 0..<p.count {
                    let want: Double = Double(before[k][i]) - rate * Double(grads[k][i])
                    let got = Double(p.values![i])
                    worst = max(worst, abs(got - want) / (abs(want) + 1e-3))
                }
            }
            #expect(worst < 1e-5, "step \(step): SGD update off by \(worst) (lr scale \(s.lrScale))")
            seen.append(planned)
        }
        // Whether the tiny model's noise scale on this run's random data exceeds the
        // current batch is data-dependent (the rule is checked every step above, growth
        // itself deterministically in GradientNoiseScaleTests); the choices never shrink,
        // at most double and stay within the bounds, and a grown choice is what ran next.
        print("noise controller: micro-batches \(seen), \(finite) finite estimates, grew \(grew)")
        #expect(finite >= 1, "\(seen), \(finite) finite estimates")
        #expect(!grew || seen.last! > 2)
        #expect(zip(seen, seen.dropFirst()).allSatisfy { $0 <= $1 && $1 <= 2 * $0 } && seen.allSatisfy { $0 <= 16 })
    }

    /// The default (fixed) control: the old behaviour (accumulationSteps micro-batches,
    /// κ = 1, the rate untouched) with the estimate still reported.
    @Test func fixedControlKeepsAccumulationAndReportsNoise() throws {
        let data = try TrainerRunTests.dataFile(lines: 60, seed: UInt64.random(in: 1...1 << 40))
        defer { unlink(data) }
        let (t, tokenizer) = try Self.trainer(accumulation: 3)
        _ = try t.loadData(path: data, tokenizer: tokenizer, options: DataLoadOptions(maxTokens: 48, overLength: .truncate), evalFraction: 0,
                           seed: 1, epochs: 1)
        let opt = Optimizer(algorithm: .adamw)
        try t.register(in: opt, group: try opt.addGroup(OptimizerHyperparameters.defaults(for: .adamw)))
        for step in 1...3 {
            _ = try t.trainStep(opt)
            let s = t.batch.stats
            #expect(s.step == step && s.microBatches == 3 && s.nextMicroBatches == 3 && s.kappa == 1 && s.lrScale == 1)
            #expect(s.gradSquared.isFinite && s.trace.isFinite && s.smallTargets < s.bigTargets)
        }
        var bad = BatchSizeOptions()
        bad.mode = .noise   // min 1: cannot measure
        #expect(throws: BatchCoreError.self) { try t.setBatchControl(bad) }
    }

    /// A checkpoint keeps the controller's choice and the averages: a resumed run makes the
    /// same choices and estimates as the uninterrupted one.
    @Test func checkpointKeepsControllerState() throws {
        let data = try TrainerRunTests.dataFile(lines: 120, seed: UInt64.random(in: 1...1 << 40))
        let dir = data + ".ckpt"
        defer { unlink(data); _ = try? FileManager.default.removeItem(atPath: dir) }
        func run(_ steps: Int, save: Int?, resume: Bool) throws -> [BatchSizeStats] {
            let (t, tokenizer) = try Self.trainer(accumulation: 2)
            _ = try t.loadData(path: data, tokenizer: tokenizer, options: DataLoadOptions(maxTokens: 48, overLength: .truncate), evalFraction: 0,
                               seed: 3, epochs: 3)
            var c = BatchSizeOptions()
            c.mode = .noise
            c.minMicroBatches = 2
            c.maxMicroBatches = 8
            c.warmupSteps = 1
            c.lrScaling = .squareRoot
            try t.setBatchControl(c)
            let opt = Optimizer(algorithm: .adamw)
            var h = OptimizerHyperparameters.defaults(for: .adamw)
            h.lr = 1e-3
            try t.register(in: opt, group: try opt.addGroup(h))
            if resume { try t.loadCheckpoint(dir, optimizer: opt) }
            var out: [BatchSizeStats] = []
            while t.stepCount < steps, try t.trainStep(opt) != nil {
                out.append(t.batch.stats)
                if t.stepCount == save { try t.saveCheckpoint(dir, optimizer: opt) }
            }
            return out
        }
        let full = try run(6, save: 3, resume: false)
        let resumed = try run(6, save: nil, resume: true)
        #expect(Array(full.suffix(3)) == resumed)
    }
}
