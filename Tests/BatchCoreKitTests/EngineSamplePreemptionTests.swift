import BCCore
import BCKV
import BCModel
import BCEngine
import Testing

/// Issue 17: parallel samples (n > 1) that together outgrow the KV budget are preempted
/// one by one and recomputed (prompt + their generated tokens, sampler state kept), never
/// failed: every sample finishes normally and its tokens equal those of a run with
/// ample KV, for greedy and for seeded sampling.
@Suite(.serialized, .enabled(if: TestModel.available)) struct EngineSamplePreemptionTests {
    @Test func samplesOutgrowingTheBudgetArePreemptedNotFailed() throws {
        let model = try TestModel.languageModel()
        let prompt = model.tokenizer.encode("Write a long essay about the sea. The sea", addSpecial: false, parseSpecial: false)
        // f32 KV, 16-position blocks: a budget of 10 blocks holds one sample of
        // prompt + 40 tokens (4 blocks) with room, but not 5 of them together.
        let perPosition = model.config.layerCount * model.config.kvDim * 2 * 4
        let tight = perPosition * 16 * 10
        let seeded = SamplingParams(temperature: 0.9, topK: 40, topP: 0.95, minP: 0.05, seed: 77)
        for (name, sampling, n) in [("greedy", SamplingParams.greedy, 3), ("seeded", seeded, 5)] {
            let spec = GenerationRequest(prompt: prompt, sampling: sampling, maxTokens: 40, n: n, ignoreEndOfGeneration: true)
            let ample = try EngineTests.run(model, [spec], budget: 64 << 20)
            #expect(ample.preemptions == 0, "\(name)")
            #expect(ample.tokens[0].count == 40 * n, "\(name)")
            // Two requests: a plain one first, then the n-sample one (it must also share
            // the budget with another request's KV).
            let other = GenerationRequest(prompt: Array(prompt.prefix(4)), sampling: .greedy, maxTokens: 8, ignoreEndOfGeneration: true)
            for specs in [[spec], [other, spec]] {
                let squeezed = try EngineTests.run(model, specs, budget: tight,
                                                   options: EngineOptions(maxBatchedTokens: 64, maxSequences: 64))
                #expect(squeezed.preemptions > 0, "\(name): the budget must force preemption")
                #expect(squeezed.reasons.allSatisfy { $0 == .length }, "\(name): \(squeezed.reasons)")
                #expect(squeezed.tokens.last == ample.tokens[0], "\(name): the samples' tokens equal an unpreempted run's")
            }
        }
    }
}
