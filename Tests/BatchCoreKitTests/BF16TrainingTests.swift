import BCCore
import BCKernels
import BCModel
import BCOptim
import BCTrain
import Foundation
import Testing

/// Training in bf16 compute (`TrainerOptions.computeBF16`) over the tiny random model:
/// losses and gradients track the float32 mode's to bf16 precision (and differ from
/// them, so the bf16 products did run), the same bits on 1, 2 and 3 threads, the bf16
/// copies counted in the memory statement, refreshed by each optimizer step (training
/// still learns) and dropped with the trainer.
@Suite(.serialized, .enabled(if: BF16GEMM.isSupported)) struct BF16TrainingTests {
    static func trainer(_ m: Transformer, bf16: Bool, lora: Bool) throws -> Trainer {
        var o = TrainerOptions()
        o.microBatchTokens = 64
        o.computeBF16 = bf16
        if lora { o.lora = LoRATrainingTests.lora(rank: 4, alpha: 8) }
        return try Trainer(model: m, options: o)
    }

    /// Loss and gradients of one micro-batch, float32 mode and bf16 mode, on fresh
    /// copies of the same model.
    static func gradients(lora: Bool, bf16: Bool) throws -> (Double, [String: [Float]]) {
        let m = try LayerForwardTests.tinyModel(seed: 31)
        let t = try Self.trainer(m, bf16: bf16, lora: lora)
        if lora { LoRATrainingTests.randomizeB(t, seed: 5) }
        let (b, targets) = ModelBackwardTests.batch([30, 17, 9], seed: 12, vocab: m.config.vocabSize)
        let totals = try t.microBatch(b, targets: targets)
        var g: [String: [Float]] = [:]
        for p in t.parameters { g[p.name] = Array(UnsafeBufferPointer(start: p.gradient!, count: p.count)) }
        return (totals.lossSum, g)
    }

    /// Per tensor: ‖g_bf16 − g_f32‖ / ‖g_f32‖ ≤ 5% (bf16 keeps 8 significant bits: each
    /// operand's relative rounding ≤ 2⁻⁹, and errors of independent roundings add up in
    /// quadrature over a backward through 3 layers — measured worst 2.3% full, 2.6% LoRA,
    /// on these seeds), loss within 0.5%,
    /// and at least one projection gradient NOT equal to float32's to 1e-6 (the bf16
    /// products ran).
    @Test(arguments: [false, true]) func gradientsTrackFloat32(lora: Bool) throws {
        let (l32, g32) = try Self.gradients(lora: lora, bf16: false)
        let (l16, g16) = try Self.gradients(lora: lora, bf16: true)
        #expect(abs(l16 - l32) <= 5e-3 * abs(l32), "loss \(l16) vs \(l32)")
        var worst = 0.0, largest = 0.0, worstName = ""
        for (name, a) in g32 {
            let b = try #require(g16[name])
            var d = 0.0, n = 0.0
            for i in a.indices { d += pow(Double(b[i]) - Double(a[i]), 2); n += pow(Double(a[i]), 2) }
            if n == 0 { continue }
            let rel = (d / n).squareRoot()
            if rel > worst { worst = rel; worstName = name }
            largest = max(largest, rel)
        }
        print("bf16 vs f32 (\(lora ? "LoRA" : "full")): loss \(l16) vs \(l32); worst relative gradient error \(worst) (\(worstName))")
        #expect(worst <= 0.05, "\(worstName): relative error \(worst)")
        #expect(largest > 1e-6, "bf16 gradients equal float32's: the bf16 products did not run")
    }

    /// The same gradient bits with 1, 2 and 3 threads (full fine-tune and LoRA).
    @Test(arguments: [false, true]) func deterministicAcrossThreads(lora: Bool) throws {
        let m = try LayerForwardTests.tinyModel(seed: 32)
        let t = try Self.trainer(m, bf16: true, lora: lora)
        if lora { LoRATrainingTests.randomizeB(t, seed: 6) }
        let (b, targets) = ModelBackwardTests.batch([25, 14, 5], seed: 9, vocab: m.config.vocabSize)
        func run() throws -> [[UInt32]] {
            t.discardGradients()
            try t.microBatch(b, targets: targets)
            return t.parameters.map { UnsafeBufferPointer(start: $0.gradient!, count: $0.count).map(\.bitPattern) }
        }
        let one = try BackwardKernelTests.withThreads(1) { try run() }
        for n in [2, 3] {
            let g = try BackwardKernelTests.withThreads(n) { try run() }
            #expect(g == one, "\(n) threads")
        }
    }

    /// Memory statement + bf16 copies; SGD steps on one batch lower its loss (each step
    /// refreshes the bf16 copies: with stale copies the loss would not move); the copies
    /// are freed with the trainer.
    @Test func learnsAndFreesItsCopies() throws {
        let m = try LayerForwardTests.tinyModel(seed: 33)
        var o32 = TrainerOptions()
        o32.microBatchTokens = 64
        var o16 = o32
        o16.computeBF16 = true
        let extra = m.weights.projections.reduce(0) { $0 + BF16Weights.byteCount(rows: $1.rows, cols: $1.cols) }
        let m32 = try TrainerMemory(model: m, options: o32, optimizerSlots: 2)
        let m16 = try TrainerMemory(model: m, options: o16, optimizerSlots: 2)
        #expect(m16.trainableCopies - m32.trainableCopies == extra && extra > 0)
        do {
            let t = try Trainer(model: m, options: o16)
            #expect(m.weights.projections.allSatisfy { $0.bf16 != nil })
            let opt = try TrainerTests.sgd(t, lr: 0.05)
            let (b, targets) = ModelBackwardTests.batch([40, 20], seed: 10, vocab: m.config.vocabSize)
            var losses: [Double] = []
            for _ in 0..<5 {
                losses.append(try t.microBatch(b, targets: targets).meanLoss)
                _ = try t.step(opt)
            }
            #expect(losses.last! < losses.first! - 0.05, "losses \(losses)")
            for i in losses.indices.dropFirst() { #expect(losses[i] < losses[i - 1], "losses \(losses)") }
        }
        #expect(m.weights.projections.allSatisfy { $0.bf16 == nil }, "a freed trainer drops the bf16 copies")
    }
}
