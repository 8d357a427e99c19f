import BCCore
import BCFormats
import BCModel
import BCOptim
import BCTrain
import Foundation
import Testing

/// LoRA training on the frozen packed base: the adapters' gradients against float64
/// finite differences of the reference Llama with the adapters MERGED (W + s·B·A, an
/// independent formulation of the factored path), B = 0 giving the base loss exactly,
/// the base untouched and without gradients, the memory statement, thread
/// determinism, and the PEFT directory format (round trip, RoPE row order, refusals).
@Suite(.serialized) struct LoRATrainingTests {
    static func lora(rank: Int = 3, alpha: Double = 5, rs: Bool = false, targets: [LoRATarget] = LoRATarget.allCases)
        -> LoRAConfig {
        var l = LoRAConfig()
        l.rank = rank
        l.alpha = alpha
        l.rsLoRA = rs
        l.targets = targets
        l.seed = 7
        return l
    }

    static func trainer(_ m: Transformer, _ l: LoRAConfig, tokens: Int = 64) throws -> Trainer {
        var o = TrainerOptions()
        o.microBatchTokens = tokens
        o.lora = l
        return try Trainer(model: m, options: o)
    }

    /// Gives every B random non-zero values (fresh B = 0 makes dA = 0).
    static func randomizeB(_ t: Trainer, seed: UInt64) {
        var rng = SplitMix64(state: seed)
        for p in t.parameters where p.name.hasSuffix("lora_B.weight") {
            for i in 0..<p.count { p.values![i] = 0.3 * rng.uniform() }
        }
    }

    /// The base tensors with every adapter merged in float64: W[first + o][k] += s · Σ_j B[o][j]·A[j][k].
    static func merged(_ m: Transformer, _ t: Trainer) throws -> ModelBackwardTests.Tensors {
        var w = try ModelBackwardTests.tensors(m)
        for e in t.adapters!.entries {
            let name = e.target.tensor.ggufName(layer: e.layer), s = e.slot
            for o in 0..<s.rows { for k in 0..<s.cols {
                var acc = 0.0
                for j in 0..<s.rank { acc += Double(s.b[o * s.rank + j]) * Double(s.a[j * s.cols + k]) }
                w[name]!.values[o * s.cols + k] += Double(s.scale) * acc
            } }
        }
        return w
    }

    /// dL/dA and dL/dB of every adapter (6 random coordinates each) against central
    /// differences of the merged float64 reference; the loss against the reference.
    /// Per-module rank and alpha (q rank 2, down alpha 9), alpha/r and rsLoRA; base
    /// tensors get no gradient. Tolerance as ModelBackwardTests: 2e-3 · max|fd| + 1e-6.
    @Test(arguments: [false, true]) func gradientsMatchFiniteDifferences(rs: Bool) throws {
        let m = try LayerForwardTests.tinyModel(seed: 23, untied: rs)
        var l = Self.lora(rs: rs)
        l.rankPattern[.q] = 2
        l.alphaPattern[.down] = 9
        let t = try Self.trainer(m, l)
        Self.randomizeB(t, seed: rs ? 31 : 32)
        let c = m.config
        let (b, targets) = ModelBackwardTests.batch([17, 11, 6], seed: 9, vocab: c.vocabSize)
        let totals = try t.microBatch(b, targets: targets)
        let ref = ModelBackwardTests.referenceLoss(c, try Self.merged(m, t), tokens: b.tokens, documents: b.documentLengths,
                                                   targets: targets, scale: 1)
        #expect(abs(totals.lossSum - ref) <= 1e-5 * abs(ref), "loss \(totals.lossSum) vs merged reference \(ref)")
        #expect(m.weights.parameters.allSatisfy { $0.gradient == nil && $0.values == nil || $0.shape.count == 1 },
                "no base projection has a trainable copy")
        #expect(m.weights.parameters.allSatisfy { $0.gradient == nil }, "no base tensor has a gradient")
        #expect(t.parameters.count == 2 * 7 * c.layerCount)
        var rng = SplitMix64(state: rs ? 5 : 6)
        for p in t.parameters {
            let g = Array(UnsafeBufferPointer(start: p.gradient!, count: p.count))
            #expect(g.contains { $0 != 0 }, "\(p.name): gradient all zero")
            var fd: [Double] = [], picks: [Int] = []
            for _ in 0..<6 {
                let i = Int(rng.next() % UInt64(p.count))
                picks.append(i)
                let v = p.values![i], h: Float = 1e-3
                // The perturbation is exact in float32 (v ± h rounded once); the difference
                // quotient uses the values actually stored.
                p.values![i] = v + h
                let vu = Double(p.values![i])
                let up = ModelBackwardTests.referenceLoss(c, try Self.merged(m, t), tokens: b.tokens,
                                                          documents: b.documentLengths, targets: targets, scale: 1)
                p.values![i] = v - h
                let vd = Double(p.values![i])
                let down = ModelBackwardTests.referenceLoss(c, try Self.merged(m, t), tokens: b.tokens,
                                                            documents: b.documentLengths, targets: targets, scale: 1)
                p.values![i] = v
                fd.append((up - down) / (vu - vd))
            }
            let bound = 2e-3 * (fd.map(abs).max() ?? 0) + 1e-6
            for (k, i) in picks.enumerated() {
                #expect(abs(Double(g[i]) - fd[k]) <= bound, "\(p.name)[\(i)]: \(g[i]) vs finite difference \(fd[k])")
            }
        }
    }

    /// A fresh adapter (B = 0) gives the base model's loss bit for bit; A is
    /// U(±1/√in), different per module and per seed, the same for the same seed.
    @Test func freshAdaptersGiveTheBaseLoss() throws {
        let m = try LayerForwardTests.tinyModel(seed: 24)
        let (b, targets) = ModelBackwardTests.batch([15, 9], seed: 3, vocab: m.config.vocabSize)
        let base = try m.loss(b, targets: targets, activations: ForwardActivations(mode: .keepLayers), gradients: LayerGradients())
        var aValues: [String: [Float]] = [:]
        do {
            let t = try Self.trainer(m, Self.lora(rank: 4, alpha: 8))
            let e = try t.evaluate(b, targets: targets)
            #expect(e.lossSum == base.lossSum, "fresh LoRA loss \(e.lossSum) vs base \(base.lossSum)")
            let tr = try t.microBatch(b, targets: targets)
            #expect(tr.lossSum == base.lossSum)
            for p in t.parameters {
                let v = Array(UnsafeBufferPointer(start: p.values!, count: p.count))
                if p.name.hasSuffix("lora_B.weight") {
                    #expect(v.allSatisfy { $0 == 0 }, "\(p.name) starts at zero")
                } else {
                    let bound = 1 / Float(p.shape[1]).squareRoot()
                    #expect(v.allSatisfy { abs($0) <= bound }, "\(p.name) within ±1/√in")
                    #expect(v.map(abs).max()! > 0.9 * bound, "\(p.name) spans its range")
                    #expect(abs(v.reduce(0, +) / Float(v.count)) < 0.1 * bound, "\(p.name) centred")
                    aValues[p.name] = v
                }
            }
        }
        #expect(Set(aValues.values.map { $0.prefix(4).map(\.bitPattern) }).count == aValues.count, "A differs per module")
        let again = try Self.trainer(m, Self.lora(rank: 4, alpha: 8))
        for p in again.parameters where aValues[p.name] != nil {
            #expect(Array(UnsafeBufferPointer(start: p.values!, count: p.count)) == aValues[p.name]!, "same seed, same A")
        }
        withExtendedLifetime(again) {}
    }

    /// Training changes only the adapters: after SGD steps the base's serving logits are
    /// the same bits as before, no base tensor has a gradient or a trainable copy, the
    /// training loss went down; after the trainer is freed nothing stays attached.
    @Test func baseStaysFrozen() throws {
        let m = try LayerForwardTests.tinyModel(seed: 25)
        let (b, targets) = ModelBackwardTests.batch([20, 12], seed: 4, vocab: m.config.vocabSize)
        let v = m.config.vocabSize
        var before = [Float](repeating: 0, count: b.count * v)
        try m.forward(documents: b, logits: &before)
        var losses: [Double] = []
        do {
            let t = try Self.trainer(m, Self.lora(rank: 4, alpha: 8, targets: [.q, .k, .v, .o, .gate, .up, .down]))
            let opt = try TrainerTests.sgd(t, lr: 0.02)
            for _ in 0..<4 {
                try t.microBatch(b, targets: targets)
                losses.append(try t.step(opt).totals.meanLoss)
            }
            #expect(m.weights.projections.allSatisfy { !$0.isTrainable && $0.grad == nil })
            #expect(m.weights.parameters.allSatisfy { $0.gradient == nil })
            var after = [Float](repeating: 0, count: b.count * v)
            try m.forward(documents: b, logits: &after)
            #expect(after == before, "serving ignores training adapters; the base is unchanged")
        }
        #expect(losses.last! < losses.first! - 0.05, "losses \(losses)")
        #expect(m.weights.projections.allSatisfy { $0.trainingAdapters.isEmpty }, "freed trainer detaches")
        _ = try Self.trainer(m, Self.lora())   // the model can be trained again
    }

    /// The same gradient bits with 1, 2 and 3 threads.
    @Test func deterministicAcrossThreads() throws {
        let m = try LayerForwardTests.tinyModel(seed: 26)
        let t = try Self.trainer(m, Self.lora(rank: 5, alpha: 3))
        Self.randomizeB(t, seed: 41)
        let (b, targets) = ModelBackwardTests.batch([21, 14, 5], seed: 8, vocab: m.config.vocabSize)
        func run() throws -> [[Float]] {
            t.discardGradients()
            try t.microBatch(b, targets: targets)
            return t.parameters.map { Array(UnsafeBufferPointer(start: $0.gradient!, count: $0.count)) }
        }
        let one = try BackwardKernelTests.withThreads(1) { try run() }
        for n in [2, 3] {
            let g = try BackwardKernelTests.withThreads(n) { try run() }
            #expect(g.map { $0.map(\.bitPattern) } == one.map { $0.map(\.bitPattern) }, "\(n) threads")
        }
    }

    /// The memory statement counts only the adapters: far below a full fine-tune's.
    @Test func memoryFarBelowFullFineTune() throws {
        let m = try LayerForwardTests.tinyModel(seed: 27)
        var full = TrainerOptions()
        full.microBatchTokens = 64
        var lo = full
        lo.lora = Self.lora(rank: 2, alpha: 4, targets: [.q, .v])
        let mf = try TrainerMemory(model: m, options: full, optimizerSlots: 2)
        let ml = try TrainerMemory(model: m, options: lo, optimizerSlots: 2)
        let adapterValues = lo.lora!.parameterCount(m.config)
        #expect(adapterValues == 3 * (2 * (64 + 64) + 2 * (32 + 64)))
        #expect(ml.gradients == 4 * adapterValues && ml.trainableCopies == 4 * adapterValues)
        #expect(ml.optimizerState == 2 * 4 * adapterValues)
        #expect(ml.gradients * 20 < mf.gradients && ml.optimizerState * 20 < mf.optimizerState)
        let t = try Trainer(model: m, options: lo)
        #expect(t.parameters.reduce(0) { $0 + $1.count } == adapterValues)
    }

    // MARK: PEFT files

    static func tempDir(_ tag: String) -> String {
        let dir = NSTemporaryDirectory() + "bc-lora-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.removeItem(atPath: dir)
        return dir
    }

    /// Write then read gives the same A and B bits and configuration; the file holds
    /// PEFT's names and shapes, B of q/k in Hugging Face row order (HF row h·hd + t·hd/2 + j
    /// = our row h·hd + 2j + t), others as in memory; adapter_config.json has PEFT's fields.
    @Test func peftRoundTrip() throws {
        let m = try LayerForwardTests.tinyModel(seed: 28)
        var l = Self.lora(rank: 3, alpha: 6, rs: true)
        l.rankPattern[.k] = 2
        l.alphaPattern[.up] = 1.5
        let t = try Self.trainer(m, l)
        Self.randomizeB(t, seed: 51)
        let dir = Self.tempDir("rt")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try t.saveAdapter(dir, baseModel: "tiny/base")
        let json = try JSONValue.parse(try readWholeFile(dir + "/adapter_config.json", maxSize: 1 << 20))
        #expect(json["peft_type"]?.stringValue == "LORA" && json["task_type"]?.stringValue == "CAUSAL_LM")
        #expect(json["r"]?.intValue == 3 && json["lora_alpha"]?.intValue == 6 && json["use_rslora"]?.boolValue == true)
        #expect(json["base_model_name_or_path"]?.stringValue == "tiny/base")
        #expect(json["target_modules"]?.arrayValue?.compactMap(\.stringValue)
            == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        #expect(json["rank_pattern"]?["k_proj"]?.intValue == 2 && json["alpha_pattern"]?["up_proj"]?.doubleValue == 1.5)
        let file = try SafetensorsFile(path: dir + "/adapter_model.safetensors")
        let c = m.config, hd = c.headDim
        #expect(file.tensors.count == t.parameters.count)
        for p in t.parameters {
            let info = try #require(file.tensor(named: p.name), "\(p.name) in the file")
            #expect(info.shape == p.shape && info.dtype == .f32)
            let stored = try file.floats(p.name), mine = Array(UnsafeBufferPointer(start: p.values!, count: p.count))
            let rope = p.name.hasSuffix("q_proj.lora_B.weight") || p.name.hasSuffix("k_proj.lora_B.weight")
            if rope {
                let r = p.shape[1]
                for row in 0..<p.shape[0] {
                    let h = row / hd, w = row % hd, t2 = w / (hd / 2), j = w % (hd / 2)
                    let ours = h * hd + 2 * j + t2
                    #expect(Array(stored[row * r..<(row + 1) * r]) == Array(mine[ours * r..<(ours + 1) * r]), "\(p.name) row \(row)")
                }
                #expect(stored != mine)
            } else {
                #expect(stored == mine, "\(p.name)")
            }
        }
        let back = try LoRAAdapterSet.readPEFT(directory: dir, model: c)
        #expect(back.config.rank == 3 && back.config.alpha == 6 && back.config.rsLoRA)
        #expect(back.config.rankPattern == [.k: 2] && back.config.alphaPattern == [.up: 1.5])
        #expect(back.config.targets == LoRATarget.allCases)
        for (x, y) in zip(back.entries, t.adapters!.entries) {
            #expect(x.layer == y.layer && x.target == y.target && x.slot.scale == y.slot.scale)
            #expect(Array(UnsafeBufferPointer(start: x.slot.a, count: x.slot.rank * x.slot.cols))
                == Array(UnsafeBufferPointer(start: y.slot.a, count: y.slot.rank * y.slot.cols)))
            #expect(Array(UnsafeBufferPointer(start: x.slot.b, count: x.slot.rows * x.slot.rank))
                == Array(UnsafeBufferPointer(start: y.slot.b, count: y.slot.rows * y.slot.rank)))
        }
        #expect(t.adapters!.entries[0].slot.scale == Float(6 / Double(3).squareRoot()))
    }

    /// Hostile or mismatched adapter directories are errors naming the problem.
    @Test func badPEFTFilesAreRefused() throws {
        let m = try LayerForwardTests.tinyModel(seed: 29)
        let t = try Self.trainer(m, Self.lora(rank: 2, alpha: 4, targets: [.q, .down]))
        let dir = Self.tempDir("bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try t.saveAdapter(dir)
        let good = try String(contentsOfFile: dir + "/adapter_config.json", encoding: .utf8)
        let weights = try Data(contentsOf: URL(fileURLWithPath: dir + "/adapter_model.safetensors"))
        func expectRefused(_ what: String, config: String? = nil, tensors: [(String, [Int])]? = nil) {
            try? FileManager.default.removeItem(atPath: dir + "/adapter_config.json")
            FileManager.default.createFile(atPath: dir + "/adapter_config.json", contents: Data((config ?? good).utf8))
            if let tensors {
                var w = SafetensorsWriter()
                for (n, s) in tensors { try! w.add(n, shape: s, data: [Float](repeating: 0.5, count: s.reduce(1, *))) }
                try! w.write(to: dir + "/adapter_model.safetensors")
            } else {
                try! weights.write(to: URL(fileURLWithPath: dir + "/adapter_model.safetensors"))
            }
            #expect(throws: BatchCoreError.self, "\(what)") { _ = try LoRAAdapterSet.readPEFT(directory: dir, model: m.config) }
        }
        // The unchanged files read.
        _ = try LoRAAdapterSet.readPEFT(directory: dir, model: m.config)
        expectRefused("r 0", config: good.replacingOccurrences(of: "\"r\": 2", with: "\"r\": 0"))
        expectRefused("r mismatching the tensors", config: good.replacingOccurrences(of: "\"r\": 2", with: "\"r\": 3"))
        expectRefused("DoRA", config: good.replacingOccurrences(of: "\"use_dora\": false", with: "\"use_dora\": true"))
        expectRefused("not LoRA", config: good.replacingOccurrences(of: "\"LORA\"", with: "\"IA3\""))
        expectRefused("unknown module", config: good.replacingOccurrences(of: "\"down_proj\"", with: "\"lm_head\""))
        expectRefused("not JSON", config: "{\"r\": ")
        let c = m.config, l0 = LoRATarget.q.peftPath(layer: 0)
        var all: [(String, [Int])] = []
        for l in 0..<c.layerCount {
            all += [(LoRATarget.q.peftPath(layer: l) + ".lora_A.weight", [2, 64]), (LoRATarget.q.peftPath(layer: l) + ".lora_B.weight", [64, 2]),
                    (LoRATarget.down.peftPath(layer: l) + ".lora_A.weight", [2, 96]), (LoRATarget.down.peftPath(layer: l) + ".lora_B.weight", [64, 2])]
        }
        expectRefused("missing tensor", tensors: all.filter { $0.0 != l0 + ".lora_B.weight" })
        expectRefused("wrong base shape", tensors: all.map { $0.0 == l0 + ".lora_A.weight" ? ($0.0, [2, 63]) : $0 })
        expectRefused("extra layer", tensors: all + [(LoRATarget.q.peftPath(layer: 9) + ".lora_A.weight", [2, 64])])
        expectRefused("B transposed", tensors: all.map { $0.0 == l0 + ".lora_B.weight" ? ($0.0, [2, 64]) : $0 })
    }
}
