import BCCore
import BCFormats
import BCModel
import BCTrain
import Foundation
import Testing

/// LoRA adapter files and merging: the llama.cpp GGUF adapter format (round trip, names,
/// ggml dims, scale folding, hostile files refused), merging/unmerging into the base
/// against float64 W + f·s·B·A, exact restore, thread invariance, and model soups against
/// a float64 average.
@Suite(.serialized) struct LoRAFilesTests {
    static func adapters(_ m: Transformer, seed: UInt64) throws -> Trainer {
        var l = LoRATrainingTests.lora(rank: 3, alpha: 6, rs: true)
        l.rankPattern[.k] = 2
        l.alphaPattern[.up] = 1.5
        let t = try LoRATrainingTests.trainer(m, l)
        LoRATrainingTests.randomizeB(t, seed: seed)
        return t
    }

    static func values(_ p: UnsafeMutablePointer<Float>, _ n: Int) -> [Float] { Array(UnsafeBufferPointer(start: p, count: n)) }

    /// Write then read: llama.cpp's metadata, names and ggml dims; A stored as is; B
    /// stored times scale / (alpha / r) (rsLoRA and alpha_pattern folded in), so the read
    /// adapter has the same s·B (within 1 float32 rounding) and the same A bits.
    @Test func ggufRoundTrip() throws {
        let m = try LayerForwardTests.tinyModel(seed: 31)
        let t = try Self.adapters(m, seed: 52)
        let path = LoRATrainingTests.tempDir("gguf") + ".gguf"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try t.saveAdapterGGUF(path)
        let f = try GGUFFile(path: path)
        #expect(f.value("general.type")?.stringValue == "adapter" && f.value("adapter.type")?.stringValue == "lora")
        #expect(f.value("general.architecture")?.stringValue == "llama" && f.value("adapter.lora.alpha")?.doubleValue == 6)
        let set = t.adapters!
        #expect(f.tensors.count == 2 * set.entries.count)
        for e in set.entries {
            let s = e.slot
            let a = try #require(f.tensor(named: "\(e.target.tensor.ggufName(layer: e.layer)).lora_a"))
            let b = try #require(f.tensor(named: "\(e.target.tensor.ggufName(layer: e.layer)).lora_b"))
            #expect(a.dims == [s.cols, s.rank] && b.dims == [s.rank, s.rows] && a.type == .f32 && b.type == .f32)
            #expect(try f.dequantizeTensor(a.name) == Self.values(s.a, s.rank * s.cols))
            let fold = Double(s.scale) / (6 / Double(s.rank))
            #expect(abs(fold - 1) > 0.01)  // rsLoRA: every module folds
            #expect(try f.dequantizeTensor(b.name) == Self.values(s.b, s.rows * s.rank).map { Float(Double($0) * fold) })
        }
        let back = try LoRAAdapterSet.read(path: path, model: m.config)
        #expect(back.config.targets == LoRATarget.allCases && back.config.rank == 3 && back.config.rankPattern == [.k: 2])
        #expect(back.config.alpha == 6 && !back.config.rsLoRA && back.config.alphaPattern.isEmpty)
        for (x, y) in zip(back.entries, set.entries) {
            #expect(x.layer == y.layer && x.target == y.target && x.slot.rank == y.slot.rank)
            #expect(Self.values(x.slot.a, x.slot.rank * x.slot.cols) == Self.values(y.slot.a, y.slot.rank * y.slot.cols))
            for i in 0..<(x.slot.rows * x.slot.rank) {
                let got = Double(x.slot.scale) * Double(x.slot.b[i]), want = Double(y.slot.scale) * Double(y.slot.b[i])
                #expect(abs(got - want) <= 2.5e-7 * abs(want), "\(y.target) \(i)")
            }
        }
    }

    /// llama.cpp semantics of a missing alpha (scale 1) and per-module ranks: alpha = r per module.
    @Test func ggufWithoutAlphaScalesByOne() throws {
        let c = LayerForwardTests.tiny
        var w = Self.header()
        w.set("general.architecture", .string("llama"))
        try Self.addAdapter(&w, c, .v, rank: 2)
        try Self.addAdapter(&w, c, .down, rank: 4)
        let set = try Self.read(w, c)
        #expect(set.entries.allSatisfy { $0.slot.scale == 1 })
        #expect(set.config.targets == [.v, .down] && set.config.rank(.v) == 2 && set.config.rank(.down) == 4)
    }

    static func header() -> GGUFWriter {
        var w = GGUFWriter()
        w.set("general.type", .string("adapter"))
        w.set("adapter.type", .string("lora"))
        return w
    }

    static func addAdapter(_ w: inout GGUFWriter, _ c: ModelConfig, _ t: LoRATarget, rank: Int, layers: Range<Int>? = nil,
                           dimsA: [Int]? = nil, dimsB: [Int]? = nil, value: Float = 0.25) throws {
        let (rows, cols) = t.tensor.shape(c)
        var rng = SplitMix64(state: UInt64(t.rawValue) + 99)
        for l in layers ?? 0..<c.layerCount {
            let da = dimsA ?? [cols, rank], db = dimsB ?? [rank, rows]
            try w.addTensor(name: LoRAAdapterSet.ggufName(t, layer: l, isB: false), dims: da,
                            floats: (0..<da.reduce(1, *)).map { _ in value * rng.uniform() })
            try w.addTensor(name: LoRAAdapterSet.ggufName(t, layer: l, isB: true), dims: db,
                            floats: (0..<db.reduce(1, *)).map { _ in value * rng.uniform() })
        }
    }

    static func read(_ w: GGUFWriter, _ c: ModelConfig) throws -> LoRAAdapterSet {
        let bytes = try w.serialize()
        let f = try bytes.withUnsafeBytes { try GGUFFile(bytes: $0) }
        return try LoRAAdapterSet.readGGUF(f, model: c, name: "crafted")
    }

    /// Hostile or mismatched GGUF adapters are errors, never a crash, and name the problem.
    @Test func badGGUFFilesAreRefused() throws {
        let c = LayerForwardTests.tiny
        func expectRefused(_ what: String, _ build: (inout GGUFWriter) throws -> Void) {
            var w = Self.header()
            w.set("general.architecture", .string("llama"))
            w.set("adapter.lora.alpha", .float32(8))
            do {
                try build(&w)
                _ = try Self.read(w, c)
                Issue.record("\(what): accepted")
            } catch let e as BatchCoreError {
                #expect(e.kind == .format || e.kind == .unsupported || e.kind == .notFound, "\(what): \(e)")
            } catch { Issue.record("\(what): \(error)") }
        }
        expectRefused("not an adapter") { w in w.set("general.type", .string("model")); try Self.addAdapter(&w, c, .q, rank: 2) }
        expectRefused("other architecture") { w in w.set("general.architecture", .string("qwen2")); try Self.addAdapter(&w, c, .q, rank: 2) }
        expectRefused("aLoRA") { w in w.set("adapter.type", .string("alora")); try Self.addAdapter(&w, c, .q, rank: 2) }
        expectRefused("NaN alpha") { w in w.set("adapter.lora.alpha", .float32(.nan)); try Self.addAdapter(&w, c, .q, rank: 2) }
        expectRefused("absurd alpha") { w in w.set("adapter.lora.alpha", .float32(1e35)); try Self.addAdapter(&w, c, .q, rank: 2) }
        expectRefused("string alpha") { w in w.set("adapter.lora.alpha", .string("16")); try Self.addAdapter(&w, c, .q, rank: 2) }
        expectRefused("no tensors") { _ in }
        expectRefused("missing layer") { w in try Self.addAdapter(&w, c, .v, rank: 2, layers: 0..<(c.layerCount - 1)) }
        expectRefused("layer beyond the model") { w in
            try Self.addAdapter(&w, c, .v, rank: 2)
            try w.addTensor(name: "blk.\(c.layerCount).attn_v.weight.lora_a", dims: [c.embeddingDim, 2],
                            floats: [Float](repeating: 0.5, count: 2 * c.embeddingDim))
        }
        expectRefused("embedding adapter") { w in
            try Self.addAdapter(&w, c, .v, rank: 2)
            try w.addTensor(name: "token_embd.weight.lora_a", dims: [c.embeddingDim, 2], floats: [Float](repeating: 0.5, count: 2 * c.embeddingDim))
        }
        expectRefused("wrong base shape") { w in try Self.addAdapter(&w, c, .gate, rank: 2, dimsB: [2, c.feedForwardDim + 1]) }
        expectRefused("transposed A") { w in try Self.addAdapter(&w, c, .gate, rank: 2, dimsA: [2, c.embeddingDim]) }
        expectRefused("A and B ranks differ") { w in try Self.addAdapter(&w, c, .o, rank: 2, dimsB: [3, c.embeddingDim]) }
        expectRefused("rank beyond maxRank") { w in try Self.addAdapter(&w, c, .o, rank: LoRASlot.maxRank + 1) }
        expectRefused("3-d tensor") { w in try Self.addAdapter(&w, c, .o, rank: 2, dimsA: [c.embeddingDim, 2, 1]) }
        expectRefused("rank differs across layers") { w in
            try Self.addAdapter(&w, c, .up, rank: 2, layers: 0..<1)
            try Self.addAdapter(&w, c, .up, rank: 3, layers: 1..<c.layerCount)
        }
        expectRefused("NaN value") { w in try Self.addAdapter(&w, c, .k, rank: 2, value: .nan) }
        expectRefused("infinite value") { w in try Self.addAdapter(&w, c, .k, rank: 2, value: .infinity) }
        // The same good file is accepted (so the refusals above are for their reason).
        var good = Self.header()
        good.set("general.architecture", .string("llama"))
        good.set("adapter.lora.alpha", .float32(8))
        try Self.addAdapter(&good, c, .k, rank: 2)
        let set = try Self.read(good, c)
        #expect(set.entries.count == c.layerCount && set.entries[0].slot.scale == 4)
        // Truncated files: every prefix is an error.
        let bytes = try good.serialize()
        for n in stride(from: 0, to: bytes.count, by: max(1, bytes.count / 97)) {
            let cut = Array(bytes[0..<n])
            #expect(throws: BatchCoreError.self) {
                let f = try cut.withUnsafeBytes { try GGUFFile(bytes: $0) }
                _ = try LoRAAdapterSet.readGGUF(f, model: c, name: "cut")
            }
        }
        // The model shape must match (the same file for a model with more layers).
        var other = c
        other.layerCount += 1
        #expect(throws: BatchCoreError.self) { _ = try Self.read(good, other) }
    }

    // MARK: Merging

    /// Every projection value after merge(f) against float64 W + f·s·B·A (one float32
    /// rounding: within 2^-24·|ref| + 1e-30); unmerge brings W back within 2 ulp of
    /// max(|W|, |W + ΔW|); withMerged restores the exact bits; rows outside adapters untouched.
    @Test(arguments: [Float(0.7), Float(-1.3)]) func mergeMatchesFloat64(factor: Float) throws {
        let m = try LayerForwardTests.tinyModel(seed: 33)
        let t = try Self.adapters(m, seed: 54)
        let set = t.adapters!
        set.detach(from: m.weights)
        let base = try ModelBackwardTests.tensors(m)
        var want = base
        for e in set.entries {
            let name = e.target.tensor.ggufName(layer: e.layer), s = e.slot
            for o in 0..<s.rows { for k in 0..<s.cols {
                var acc = 0.0
                for j in 0..<s.rank { acc += Double(s.b[o * s.rank + j]) * Double(s.a[j * s.cols + k]) }
                want[name]!.values[o * s.cols + k] += Double(factor) * Double(s.scale) * acc
            } }
        }
        let inside = try set.withMerged(into: m.weights, factor: factor) { try ModelBackwardTests.tensors(m) }
        #expect(try ModelBackwardTests.tensors(m).mapValues(\.values) == base.mapValues(\.values))
        try set.merge(into: m.weights, factor: factor)
        let merged = try ModelBackwardTests.tensors(m)
        #expect(merged.mapValues(\.values) == inside.mapValues(\.values))
        var changed = 0
        for (name, w) in want {
            for (i, ref) in w.values.enumerated() {
                let got = merged[name]!.values[i]
                if got != base[name]!.values[i] { changed += 1 }
                #expect(abs(got - ref) <= 0x1p-24 * abs(ref) + 1e-30, "\(name)[\(i)]: \(got) vs \(ref)")
            }
        }
        #expect(changed > 1000)
        try set.unmerge(from: m.weights, factor: factor)
        let back = try ModelBackwardTests.tensors(m)
        for (name, w) in base {
            for (i, ref) in w.values.enumerated() {
                let bound = 2 * 0x1p-23 * max(abs(ref), abs(want[name]!.values[i]))
                #expect(abs(back[name]!.values[i] - ref) <= bound, "\(name)[\(i)]")
            }
        }
    }

    /// The merged weights are the same bits on 1, 2 and 3 threads.
    @Test func mergeDeterministicAcrossThreads() throws {
        func run(_ n: Int) throws -> [String: [Double]] {
            let m = try LayerForwardTests.tinyModel(seed: 34)
            let t = try Self.adapters(m, seed: 55)
            t.adapters!.detach(from: m.weights)
            return try BackwardKernelTests.withThreads(n) {
                try t.adapters!.merge(into: m.weights, factor: 0.9)
                return try ModelBackwardTests.tensors(m).mapValues(\.values)
            }
        }
        let one = try run(1)
        for n in [2, 3] { #expect(try run(n) == one, "\(n) threads") }
    }

    // MARK: Model soups

    static func soupFile(_ path: String, seed: UInt64, dims: [Int] = [5, 7], f16: Bool) throws -> [[Float]] {
        var rng = SplitMix64(state: seed)
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("general.name", .string("soup-\(seed)"))
        let m = (0..<dims.reduce(1, *)).map { _ in rng.uniform() }, v = (0..<dims[0]).map { _ in rng.uniform() }
        var m16 = m
        if f16 {
            m16 = m.map { Float(Float16($0)) }
            var bytes = [UInt8](repeating: 0, count: 2 * m.count)
            bytes.withUnsafeMutableBytes { d in for (i, x) in m.enumerated() { d.storeBytes(of: Float16(x).bitPattern, toByteOffset: 2 * i, as: UInt16.self) } }
            try w.addTensor(name: "blk.0.attn_q.weight", dims: dims, type: .f16, data: bytes)
        } else {
            try w.addTensor(name: "blk.0.attn_q.weight", dims: dims, floats: m)
        }
        try w.addTensor(name: "blk.0.attn_norm.weight", dims: [dims[0]], floats: v)
        try w.write(to: path)
        return [m16, v]
    }

    /// The weighted average of three files (F32 and F16 inputs) against float64; the
    /// first file's metadata; F16 output rounds matrices once; mismatches and bad weights refused.
    @Test func soupMatchesFloat64() throws {
        let dir = LoRATrainingTests.tempDir("soup")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let paths = (0..<3).map { "\(dir)/m\($0).gguf" }
        var inputs: [[[Float]]] = []
        for (k, p) in paths.enumerated() { inputs.append(try Self.soupFile(p, seed: UInt64(k) + 5, f16: k == 1)) }
        let w = [0.5, 1.25, 2.0]
        for f16 in [false, true] {
            let out = "\(dir)/out\(f16).gguf"
            try ModelSoup.average(paths: paths, weights: w, out: out, f16: f16)
            let f = try GGUFFile(path: out)
            #expect(f.value("general.name")?.stringValue == "soup-5" && f.value("general.file_type")?.uintValue == (f16 ? 1 : 0))
            #expect(f.tensor(named: "blk.0.attn_q.weight")?.type == (f16 ? .f16 : .f32))
            for (ti, name) in ["blk.0.attn_q.weight", "blk.0.attn_norm.weight"].enumerated() {
                let got = try f.dequantizeTensor(name)
                for i in got.indices {
                    let ref = (0..<3).reduce(0.0) { $0 + w[$1] * Double(inputs[$1][ti][i]) } / 3.75
                    let tol = (f16 && ti == 0 ? 0x1p-11 : 0x1p-24) * abs(ref) + 1e-30
                    #expect(abs(Double(got[i]) - ref) <= tol, "\(name)[\(i)]")
                }
            }
        }
        try? FileManager.default.removeItem(atPath: "\(dir)/bad.gguf")
        _ = try Self.soupFile("\(dir)/bad.gguf", seed: 9, dims: [7, 5], f16: false)
        #expect(throws: BatchCoreError.self) { try ModelSoup.average(paths: [paths[0], "\(dir)/bad.gguf"], out: "\(dir)/x.gguf", f16: false) }
        #expect(throws: BatchCoreError.self) { try ModelSoup.average(paths: paths, weights: [0, 0, 0], out: "\(dir)/x.gguf", f16: false) }
        #expect(throws: BatchCoreError.self) { try ModelSoup.average(paths: paths, weights: [1, -1, 1], out: "\(dir)/x.gguf", f16: false) }
        #expect(throws: BatchCoreError.self) { try ModelSoup.average(paths: paths, weights: [1, .nan, 1], out: "\(dir)/x.gguf", f16: false) }
        #expect(throws: BatchCoreError.self) { try ModelSoup.average(paths: paths, weights: [1], out: "\(dir)/x.gguf", f16: false) }
        #expect(throws: BatchCoreError.self) { try ModelSoup.average(paths: [], out: "\(dir)/x.gguf", f16: false) }
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/x.gguf"))
    }
}

extension LoRAFilesTests {
    /// PEFT's own adapter_config.json (the fixture's, peft 0.21) reads; each newer PEFT
    /// field that changes what the adapter computes, when set, is refused (.unsupported).
    @Test func newerPEFTFieldsAreRefused() throws {
        let src = Repo.path("Tests/fixtures/lora/plain")
        let model = try HFModel.load(path: Repo.path("Tests/fixtures/train/tiny_tied")).0
        let good = try String(contentsOfFile: src + "/adapter_config.json", encoding: .utf8)
        let dir = LoRATrainingTests.tempDir("newpeft")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.copyItem(atPath: src + "/adapter_model.safetensors", toPath: dir + "/adapter_model.safetensors")
        func read(_ config: String) throws -> LoRAAdapterSet {
            try? FileManager.default.removeItem(atPath: dir + "/adapter_config.json")
            FileManager.default.createFile(atPath: dir + "/adapter_config.json", contents: Data(config.utf8))
            return try LoRAAdapterSet.read(path: dir, model: model.config)
        }
        _ = try read(good)
        for (from, to) in [("\"lora_bias\": false", "\"lora_bias\": true"), ("\"use_qalora\": false", "\"use_qalora\": true"),
                           ("\"target_parameters\": null", "\"target_parameters\": [\"mlp.experts\"]"),
                           ("\"exclude_modules\": null", "\"exclude_modules\": [\"q_proj\"]"),
                           ("\"layer_replication\": null", "\"layer_replication\": [[0, 2]]"),
                           ("\"trainable_token_indices\": null", "\"trainable_token_indices\": [1]"),
                           ("\"alora_invocation_tokens\": null", "\"alora_invocation_tokens\": [3]")] {
            #expect(good.contains(from), "\(from) in PEFT's config")
            do {
                _ = try read(good.replacingOccurrences(of: from, with: to))
                Issue.record("\(to): accepted")
            } catch let e as BatchCoreError {
                #expect(e.kind == .unsupported, "\(to): \(e)")
            }
        }
    }
}
