import BCCore
import BCKV
import BCModel
import BCEngine
import Testing

/// The engine's offline batch mode on the real model: the same greedy text per request
/// as the online mode (batch invariance), each shared prefix prefilled once (every
/// request attaches exactly the longest block-aligned prefix it shares with a request
/// ahead of it in the prefix tree's order), fewer prefill tokens than online, and no
/// stall under preemption or when a group's first request is cancelled mid-prefill.
@Suite(.serialized, .enabled(if: TestModel.available)) struct OfflineEngineTests {
    struct Outcome {
        var tokens: [[Int32]]
        var cached: [Int]
        var reasons: [FinishReason?]
        var metrics: EngineMetrics
    }

    static func run(_ model: LanguageModel, _ specs: [GenerationRequest], budget: Int, options: EngineOptions,
                    cancelFirstAtStep: Int? = nil, cancel: Int? = nil) throws -> Outcome {
        let cache = try PagedKVCache(kvDim: model.config.kvDim, layout: .full(layerCount: model.config.layerCount),
                                     budgetBytes: budget, maxLength: 2048)
        let engine = try Engine(model: model, cache: cache, options: options)
        var ids: [UInt64] = []
        for s in specs { ids.append(try engine.submit(s)) }
        var out = Outcome(tokens: Array(repeating: [], count: specs.count), cached: Array(repeating: -1, count: specs.count),
                          reasons: Array(repeating: nil, count: specs.count), metrics: engine.metrics)
        var step = 0
        while engine.hasWork && step < 5_000 {
            try engine.step()
            step += 1
            if step == cancelFirstAtStep, let k = cancel { try engine.cancel(ids[k]) }
            for e in engine.poll() {
                switch e {
                case .token(let rid, _, _, let t, _, _):
                    if let k = ids.firstIndex(of: rid), t >= 0 { out.tokens[k].append(t) }
                case .finished(let rid, _, _, let reason, _, let m, _):
                    if let k = ids.firstIndex(of: rid) {
                        #expect(out.reasons[k] == nil, "one finished event per request")
                        out.reasons[k] = reason
                        out.cached[k] = m.cachedPromptTokens
                    }
                }
            }
        }
        #expect(!engine.hasWork, "the engine finished every request")
        out.metrics = engine.currentMetrics()
        return out
    }

    /// Three groups of requests sharing 100–200-token prefixes (one with a nested
    /// sub-prefix, one member exactly the prefix), and singles, in a shuffled order.
    static func workload(_ model: LanguageModel) -> [[Int32]] {
        let texts = EngineTests.texts
        func encode(_ s: String) -> [Int32] { model.tokenizer.encode(s, addSpecial: false, parseSpecial: false) }
        var prompts: [[Int32]] = []
        for g in 0..<3 {
            let body = (0..<(8 + 4 * g)).map { texts[($0 * 5 + g * 3) % texts.count] }.joined(separator: " ")
            let prefix = encode("System \(g): answer briefly. Context: " + body)
            let sub = encode(" Follow-up set \(g), about " + texts[g])
            for m in 0..<(5 + g) {
                var p = prefix
                if m % 2 == 1 { p += sub }
                if m != 4 { p += encode(" Q\(m): " + texts[(m + 7 * g) % texts.count]) }  // m = 4: the prefix alone
                prompts.append(p)
            }
        }
        for k in 0..<3 { prompts.append(encode("Single \(k): " + texts[k + 10])) }
        var rng = SplitMix64(state: 2026)
        for i in stride(from: prompts.count - 1, to: 0, by: -1) { prompts.swapAt(i, Int(rng.next() % UInt64(i + 1))) }
        return prompts
    }

    @Test func offlineGivesOnlineTextsAndPrefillsEachSharedPrefixOnce() throws {
        let model = try TestModel.languageModel()
        let prompts = Self.workload(model)
        let specs = prompts.map { GenerationRequest(prompt: $0, sampling: .greedy, maxTokens: 6, ignoreEndOfGeneration: true) }
        let big = 256 << 20
        let online = try Self.run(model, specs, budget: big, options: EngineOptions())
        let offline = try Self.run(model, specs, budget: big, options: EngineOptions(offline: true))
        #expect(online.reasons.allSatisfy { $0 == .length } && offline.reasons.allSatisfy { $0 == .length })
        #expect(offline.tokens == online.tokens, "the same greedy text per request")
        #expect(online.metrics.preemptions == 0 && offline.metrics.preemptions == 0)

        // Each request attaches exactly the longest full-block prefix (at most prompt − 1
        // tokens) it shares with a request ahead of it in the tree's order.
        let bs = KVLayout.full(layerCount: model.config.layerCount).blockSize
        let tree = PromptPrefixTree(prompts: prompts.map { (0, $0) }, blockSize: bs)
        var expected = [Int](repeating: 0, count: prompts.count)
        for (p, i) in tree.order.enumerated() {
            for q in tree.order[0..<p] {
                var l = 0
                while l < min(prompts[i].count, prompts[q].count) && prompts[i][l] == prompts[q][l] { l += 1 }
                expected[i] = max(expected[i], min(l, prompts[i].count - 1) / bs * bs)
            }
        }
        #expect(offline.cached == expected, "offline cached \(offline.cached) want \(expected)")
        let cachedOnline = online.cached.reduce(0, +), cachedOffline = offline.cached.reduce(0, +)
        #expect(cachedOffline > cachedOnline, "prefix cache hits: offline \(cachedOffline), online \(cachedOnline)")
        // Decode rows are the same in both runs (6 tokens each, no preemption): the
        // difference of batched tokens is prefill tokens computed.
        #expect(offline.metrics.batchedTokens == online.metrics.batchedTokens - (cachedOffline - cachedOnline))
        #expect(offline.metrics.prefixHitRate > online.metrics.prefixHitRate)
    }

    @Test func offlineSurvivesPreemptionAndCancellingAGroupLeader() throws {
        let model = try TestModel.languageModel()
        let prompts = Self.workload(model)
        let specs = prompts.map { GenerationRequest(prompt: $0, sampling: .greedy, maxTokens: 6, ignoreEndOfGeneration: true) }
        let reference = try Self.run(model, specs, budget: 256 << 20, options: EngineOptions())
        // A KV budget a little above the longest request forces preemption; small steps
        // keep prefixes mid-prefill.
        let blocks = ((prompts.map(\.count).max() ?? 0) + 6) / 16 + 3
        let tiny = model.config.layerCount * model.config.kvDim * 2 * 4 * 16 * blocks
        let squeezed = try Self.run(model, specs, budget: tiny, options: EngineOptions(maxBatchedTokens: 64, offline: true))
        #expect(squeezed.metrics.preemptions > 0)
        #expect(squeezed.tokens == reference.tokens)
        // The first request of a group in the tree's order is cancelled while it prefills
        // the shared prefix its group waits for: the others still run, with their own texts.
        let bs = KVLayout.full(layerCount: model.config.layerCount).blockSize
        let tree = PromptPrefixTree(prompts: prompts.map { (0, $0) }, blockSize: bs)
        let leader = try #require(tree.order.first { tree.sharedDepth(of: $0) > 0 })
        #expect(tree.sharedDepth(of: leader) * bs > 64)
        let cancelled = try Self.run(model, specs, budget: 256 << 20, options: EngineOptions(maxBatchedTokens: 64, offline: true),
                                     cancelFirstAtStep: 1, cancel: leader)
        #expect(cancelled.reasons[leader] == .cancelled)
        for k in specs.indices where k != leader {
            #expect(cancelled.reasons[k] == .length)
            #expect(cancelled.tokens[k] == reference.tokens[k])
        }
    }
}
