import BCCore
import BCFormats
import BCKernels
import BCKV
import BCModel
import BCEngine
import Foundation
import Testing

/// Serving many LoRA adapters in one engine step (S-LoRA / Punica segments): the
/// low-rank kernel against float64, a mixed batch of adapters and none under
/// continuous batching with preemption equal to each request alone, logits equal to
/// the base model with the adapter MERGED (W + s·B·A in float64), prefix caching keyed
/// by adapter, thread invariance, and hostile adapter directories refused.
@Suite(.serialized) struct ServingAdapterTests {
    static let tinyPath = Repo.path("Tests/fixtures/train/tiny_tied")

    nonisolated(unsafe) private static var cached: LanguageModel?
    static func tiny() throws -> LanguageModel {
        if let cached { return cached }
        let m = try LanguageModel(path: tinyPath)
        cached = m
        return m
    }

    static func tempDir(_ tag: String) -> String {
        NSTemporaryDirectory() + "bc-serve-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// A PEFT adapter with random non-zero A and B on `targets`, written with the PEFT
    /// writer to a fresh directory; returns the directory.
    static func writeAdapter(_ m: LanguageModel, seed: UInt64, rank: Int = 4, alpha: Double = 6,
                             targets: [LoRATarget] = LoRATarget.allCases) throws -> String {
        var l = LoRAConfig()
        l.rank = rank
        l.alpha = alpha
        l.targets = targets
        var rng = SplitMix64(state: seed)
        var slots: [[LoRASlot]] = []
        for _ in 0..<m.config.layerCount {
            slots.append(try targets.sorted().map { t in
                let s = t.tensor.shape(m.config)
                return try LoRASlot(rows: s.rows, cols: s.cols, rank: rank, scale: l.scale(t),
                                    a: (0..<rank * s.cols).map { _ in 0.25 * rng.uniform() },
                                    b: (0..<s.rows * rank).map { _ in 0.25 * rng.uniform() })
            })
        }
        let dir = tempDir("a\(seed)")
        try LoRAAdapterSet(config: l, model: m.config, slots: slots).writePEFT(directory: dir, baseModel: "tiny")
        return dir
    }

    /// A second copy of the model with the adapter in `dir` merged at `scale`:
    /// W[first + o][k] += scale · s · Σ_j B[o][j]·A[j][k], summed in float64.
    static func merged(_ dir: String, scale: Double) throws -> LanguageModel {
        let m = try LanguageModel(path: tinyPath)
        let set = try LoRAAdapterSet.readPEFT(directory: dir, model: m.config)
        for e in set.entries {
            let L = m.transformer.weights.layers[e.layer], c = m.config
            let (w, first): (Linear, Int) = switch e.target {
            case .q: (L.qkv, 0)
            case .k: (L.qkv, c.embeddingDim)
            case .v: (L.qkv, c.embeddingDim + c.kvDim)
            case .o: (L.wo, 0)
            case .gate: (L.gateUp, 0)
            case .up: (L.gateUp, c.feedForwardDim)
            case .down: (L.down, 0)
            }
            try w.makeTrainable()
            let s = e.slot, cols = w.cols, weight = w.weight!
            for o in 0..<s.rows {
                for k in 0..<cols {
                    var d = 0.0
                    for j in 0..<s.rank { d += Double(s.b[o * s.rank + j]) * Double(s.a[j * cols + k]) }
                    let i = (first + o) * cols + k
                    weight[i] = Float(Double(weight[i]) + scale * Double(s.scale) * d)
                }
            }
            try w.syncPacked()
            w.dropTrainable()
        }
        return m
    }

    /// Logits of every position of `tokens` in a fresh context, with `adapter` on the sequence.
    static func logits(_ m: LanguageModel, _ tokens: [Int32], adapter: ServingAdapter? = nil, scale: Float = 1) throws -> [Float] {
        let ctx = try InferenceContext(model: m, kvBudgetBytes: 8 << 20)
        try ctx.setAdapter(sequence: 3, adapter, scale: scale)
        var b = TokenBatch()
        for (p, t) in tokens.enumerated() { b.append(t, position: p, sequence: 3, logits: true) }
        var out = [Float](repeating: 0, count: tokens.count * m.config.vocabSize)
        try out.withUnsafeMutableBufferPointer { try ctx.decode(b, logits: $0.baseAddress) }
        return out
    }

    // MARK: kernel

    /// LowRankUpdate.row against float64 (y + s·B·(A·x)), odd sizes, fresh random inputs.
    @Test func lowRankRowMatchesFloat64() {
        var rng = SplitMix64(state: 91)
        for (rank, cols, rows) in [(1, 1, 1), (3, 17, 5), (7, 33, 41), (16, 70, 19)] {
            let a = (0..<rank * cols).map { _ in rng.uniform() }, b = (0..<rows * rank).map { _ in rng.uniform() }
            let x = (0..<cols).map { _ in rng.uniform() }, y0 = (0..<rows).map { _ in rng.uniform() }
            var bT = [Float](repeating: 0, count: rank * rows)
            for o in 0..<rows { for j in 0..<rank { bT[j * rows + o] = b[o * rank + j] } }
            let scale: Float = 1.7
            var y = y0, u = [Float](repeating: 0, count: rank)
            LowRankUpdate.row(x: x, a: a, bT: bT, rank: rank, cols: cols, rows: rows, scale: scale, y: &y, u: &u)
            for o in 0..<rows {
                var ref = 0.0
                for j in 0..<rank {
                    var l = 0.0
                    for k in 0..<cols { l += Double(a[j * cols + k]) * Double(x[k]) }
                    ref += Double(b[o * rank + j]) * l
                }
                let want = Double(y0[o]) + Double(scale) * ref
                #expect(abs(Double(y[o]) - want) <= 1e-5 * max(1, abs(want)), "rank \(rank) cols \(cols) row \(o)")
            }
        }
    }

    // MARK: mixed batches

    /// 32 requests over 8 adapters and none, greedy, continuous batching with a small
    /// KV budget (preemption): each request's tokens equal that request run alone with
    /// its adapter, and its logits are within 1e-4 of the base model with the adapter
    /// merged (float32 activations of magnitude ~1; the two formulations differ by
    /// float32 rounding only).
    @Test func mixedBatchEqualsAloneAndMerged() throws {
        let m = try Self.tiny()
        let dirs = try (0..<8).map { try Self.writeAdapter(m, seed: 100 + UInt64($0), targets: $0 % 2 == 0 ? LoRATarget.allCases : [.q, .v]) }
        defer { for d in dirs { try? FileManager.default.removeItem(atPath: d) } }
        let adapters = try dirs.map { try ServingAdapter(directory: $0, model: m) }
        var rng = SplitMix64(state: 5)
        var specs: [GenerationRequest] = []
        let shared = (0..<20).map { _ in Int32(1 + rng.next() % 60) }
        for i in 0..<32 {
            let own = (0..<(3 + Int(rng.next() % 14))).map { _ in Int32(1 + rng.next() % 60) }
            let prompt = i % 3 == 0 ? shared + own : own
            let a = i % 9 == 8 ? nil : adapters[i % 9 % 8]
            specs.append(GenerationRequest(prompt: prompt, maxTokens: 10, ignoreEndOfGeneration: true,
                                           adapter: a, adapterScale: i % 5 == 0 ? 0.5 : 1))
        }
        let mixed = try EngineTests.run(m, specs, budget: 20 * 16 * 768,
                                        options: EngineOptions(maxBatchedTokens: 48, maxSequences: 12))
        #expect(mixed.preemptions > 0, "the small KV budget preempts")
        var differsFromBase = 0
        for (i, spec) in specs.enumerated() {
            let alone = try EngineTests.run(m, [spec], budget: 1 << 22)
            #expect(mixed.tokens[i] == alone.tokens[0], "request \(i): mixed batch vs alone")
            var base = spec
            base.adapter = nil
            if spec.adapter != nil, try EngineTests.run(m, [base], budget: 1 << 22).tokens[0] != alone.tokens[0] { differsFromBase += 1 }
        }
        #expect(differsFromBase >= 16, "the adapters change the output")
        // Logits against the merged model, for one request per adapter (and scale).
        for (i, spec) in specs.enumerated().prefix(10) {
            guard let a = spec.adapter else { continue }
            let seq = spec.prompt + mixed.tokens[i].dropLast()
            let got = try Self.logits(m, seq, adapter: a, scale: spec.adapterScale)
            let k = adapters.firstIndex { $0 === a }!
            let want = try Self.logits(try Self.merged(dirs[k], scale: Double(spec.adapterScale)), seq)
            let err = zip(got, want).map { abs($0 - $1) }.max() ?? 0
            #expect(err <= 1e-4, "request \(i): max |logit - merged logit| = \(err)")
            let base = try Self.logits(m, seq)
            #expect((zip(got, base).map { abs($0 - $1) }.max() ?? 0) > 1e-2, "request \(i): the adapter matters")
        }
    }

    /// A context batch mixing sequences of different adapters and none gives each row
    /// the bits of that sequence decoded alone, on 1 and 3 threads.
    @Test func contextMixedBatchIsBatchAndThreadInvariant() throws {
        let m = try Self.tiny()
        let dirs = try (0..<3).map { try Self.writeAdapter(m, seed: 300 + UInt64($0)) }
        defer { for d in dirs { try? FileManager.default.removeItem(atPath: d) } }
        let adapters = try dirs.map { try ServingAdapter(directory: $0, model: m) }
        var rng = SplitMix64(state: 17)
        let prompts = (0..<4).map { _ in (0..<(5 + Int(rng.next() % 9))).map { _ in Int32(1 + rng.next() % 60) } }
        let choice: [ServingAdapter?] = [adapters[0], nil, adapters[1], adapters[2]]
        var alone: [[Float]] = []
        for (k, p) in prompts.enumerated() { alone.append(try Self.logits(m, p, adapter: choice[k])) }
        for threads in [1, 3] {
            try Parallel.setThreadCount(threads)
            defer { try! Parallel.setThreadCount(0) }
            let ctx = try InferenceContext(model: m, kvBudgetBytes: 8 << 20)
            var b = TokenBatch()
            // Interleave the sequences' rows so adapter groups are not contiguous.
            let longest = prompts.map(\.count).max()!
            for p in 0..<longest { for k in prompts.indices where p < prompts[k].count { b.append(prompts[k][p], position: p, sequence: k, logits: true) } }
            for k in prompts.indices { try ctx.setAdapter(sequence: k, choice[k], scale: 1) }
            let v = m.config.vocabSize
            var out = [Float](repeating: 0, count: b.count * v)
            try out.withUnsafeMutableBufferPointer { try ctx.decode(b, logits: $0.baseAddress) }
            var seen = [Int](repeating: 0, count: prompts.count)
            for i in 0..<b.count {
                let k = b.sequences[i], p = seen[k]
                seen[k] += 1
                #expect(Array(out[i * v..<(i + 1) * v]) == Array(alone[k][p * v..<(p + 1) * v]), "threads \(threads) seq \(k) pos \(p)")
            }
        }
    }

    // MARK: prefix cache

    /// Blocks computed under one adapter (and scale) are reused only under the same
    /// adapter and scale, never by the base model or another adapter.
    @Test func prefixCacheIsKeyedByAdapter() throws {
        let m = try Self.tiny()
        let dirs = try (0..<2).map { try Self.writeAdapter(m, seed: 400 + UInt64($0), targets: [.q, .v]) }
        defer { for d in dirs { try? FileManager.default.removeItem(atPath: d) } }
        let a = try ServingAdapter(directory: dirs[0], model: m), b = try ServingAdapter(directory: dirs[1], model: m)
        let ctx = try InferenceContext(model: m, kvBudgetBytes: 8 << 20)
        var rng = SplitMix64(state: 3)
        let prompt = (0..<40).map { _ in Int32(1 + rng.next() % 60) }
        try ctx.setAdapter(sequence: 0, a, scale: 1)
        var batch = TokenBatch()
        for (p, t) in prompt.enumerated() { batch.append(t, position: p, sequence: 0, logits: false) }
        try ctx.decode(batch, logits: nil)
        ctx.cache.remove(sequence: 0)
        func cached(_ seq: Int, _ ad: ServingAdapter?, _ scale: Float) throws -> Int {
            try ctx.setAdapter(sequence: seq, ad, scale: scale)
            return try ctx.attachPrefix(sequence: seq, prompt: prompt)
        }
        #expect(try cached(1, b, 1) == 0, "another adapter")
        #expect(try cached(2, nil, 1) == 0, "the base model")
        #expect(try cached(3, a, 0.5) == 0, "the same adapter at another scale")
        #expect(try cached(4, a, 1) == 32, "the same adapter and scale")
        // A sequence holding positions keeps its adapter.
        #expect(throws: BatchCoreError.self) { try ctx.setAdapter(sequence: 4, b, scale: 1) }
    }

    // MARK: files

    /// Hostile or mismatched adapter directories are errors, not adapters.
    @Test func hostileAdapterFilesAreRefused() throws {
        let m = try Self.tiny()
        let dir = try Self.writeAdapter(m, seed: 500, rank: 2, targets: [.q, .down])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try ServingAdapter(directory: dir, model: m)
        let good = try String(contentsOfFile: dir + "/adapter_config.json", encoding: .utf8)
        let weights = try Data(contentsOf: URL(fileURLWithPath: dir + "/adapter_model.safetensors"))
        let c = m.config
        func names(_ l: Int) -> [(String, [Int])] {
            [(LoRATarget.q.peftPath(layer: l) + ".lora_A.weight", [2, c.embeddingDim]),
             (LoRATarget.q.peftPath(layer: l) + ".lora_B.weight", [c.embeddingDim, 2]),
             (LoRATarget.down.peftPath(layer: l) + ".lora_A.weight", [2, c.feedForwardDim]),
             (LoRATarget.down.peftPath(layer: l) + ".lora_B.weight", [c.embeddingDim, 2])]
        }
        let all = (0..<c.layerCount).flatMap(names)
        func refused(_ what: String, config: String? = nil, tensors: [(String, [Int])]? = nil, truncate: Bool = false) throws {
            try Data((config ?? good).utf8).write(to: URL(fileURLWithPath: dir + "/adapter_config.json"))
            if let tensors {
                var w = SafetensorsWriter()
                for (n, s) in tensors { try w.add(n, shape: s, data: [Float](repeating: 0.5, count: s.reduce(1, *))) }
                try w.write(to: dir + "/adapter_model.safetensors")
            } else {
                try (truncate ? weights.prefix(weights.count - 9) : weights).write(to: URL(fileURLWithPath: dir + "/adapter_model.safetensors"))
            }
            #expect(throws: BatchCoreError.self, "\(what)") { _ = try ServingAdapter(directory: dir, model: m) }
        }
        try refused("wrong shape", tensors: all.map { $0.0.hasSuffix("down_proj.lora_A.weight") ? ($0.0, [2, c.feedForwardDim - 1]) : $0 })
        try refused("missing tensor", tensors: Array(all.dropLast()))
        try refused("bad rank", config: good.replacingOccurrences(of: "\"r\": 2", with: "\"r\": 3"))
        try refused("rank 0", config: good.replacingOccurrences(of: "\"r\": 2", with: "\"r\": 0"))
        try refused("extra tensor", tensors: all + [("base_model.model.model.layers.9.mlp.down_proj.lora_A.weight", [2, 2])])
        try refused("truncated weights", truncate: true)
        // The original files still load (the refusals were the edits).
        try Data(good.utf8).write(to: URL(fileURLWithPath: dir + "/adapter_config.json"))
        try weights.write(to: URL(fileURLWithPath: dir + "/adapter_model.safetensors"))
        _ = try ServingAdapter(directory: dir, model: m)
    }
}
