import BCCore
import BCFormats
import BCModel
import BCOptim
import BCTrain
import Foundation
import Testing

/// The training path against PyTorch + transformers (LlamaForCausalLM, eager attention),
/// fixtures from tools/reference/train_fixtures.py (formats in tools/reference/TRAIN.md):
/// loss and the gradient of EVERY tensor on a packed micro-batch with loss masks and
/// document boundaries, and the weights after 10 AdamW steps, for tiny random models
/// (tied and untied heads) loaded from their Hugging Face directories; loss and sampled
/// gradients of every tensor of the real default model.
///
/// References are the float64 runs (PyTorch's own float32 run differs from float64 by
/// up to 2.5e-6 on the tiny models and 5e-4 on SmolLM2's gradients, TRAIN.md), so each
/// tolerance below bounds OUR float32 error: max |ours − ref| / max |ref| per tensor.
@Suite(.serialized) struct TrainReferenceTests {
    struct Fixture {
        let dir: String
        let json: [String: Any]
        func floats(_ file: String) throws -> [Float] {
            let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + file))
            return data.withUnsafeBytes { raw in (0..<data.count / 4).map { raw.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) } }
        }
        var batch: [String: Any] { json["batch"] as! [String: Any] }
        var tensors: [[String: Any]] { json["tensors"] as! [[String: Any]] }
        func ints(_ key: String) -> [Int] { (batch[key] as! [Any]).map { ($0 as! NSNumber).intValue } }
        var documentBatch: (DocumentBatch, [Int32]) {
            var b = DocumentBatch()
            b.tokens = ints("tokens").map { Int32($0) }
            b.documentLengths = ints("doc_lengths")
            b.wantLogits = [Bool](repeating: true, count: b.tokens.count)
            return (b, ints("targets").map { Int32($0) })
        }
    }

    static func fixture(_ name: String) throws -> Fixture {
        let dir = Repo.path("Tests/fixtures/train/" + name)
        let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/reference.json"))
        return Fixture(dir: dir, json: try JSONSerialization.jsonObject(with: data) as! [String: Any])
    }

    /// max |a − b| / max |b|.
    static func relative(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Double {
        let scale = b.map { Double(abs($0)) }.max() ?? 0
        let worst = zip(a, b).map { Double(abs($0 - $1)) }.max() ?? 0
        return scale > 0 ? worst / scale : worst
    }

    static func values(_ m: Transformer) -> [String: [Float]] {
        var out: [String: [Float]] = [:]
        for p in m.weights.parameters {
            var v = [Float](repeating: 0, count: p.count)
            switch p.storage {
            case .vector(let w): for i in 0..<p.count { v[i] = w.data[i] }
            case .rows(let lin, let first): lin.copyRows(first, count: p.shape[0], into: &v)
            case .adapter(let slot, let isB): for i in 0..<p.count { v[i] = isB ? slot.b[i] : slot.a[i] }
            }
            out[p.name] = v
        }
        return out
    }

    /// Loss within 1e-6 relative and every tensor's gradient within 1e-5 (max|diff| /
    /// max|ref|) of float64; the loaded weights are the fixture's, bit for bit (q/k in our
    /// RoPE layout).
    @Test(arguments: ["tiny_tied", "tiny_untied"]) func tinyGradientsMatchPyTorch(name: String) throws {
        let f = try Self.fixture(name)
        let (model, _) = try HFModel.load(path: f.dir)
        let initial = try f.floats("weights_initial.f32"), grads = try f.floats("grads_f64.f32")
        let loaded = Self.values(model)
        #expect(Set(loaded.keys) == Set(f.tensors.map { $0["name"] as! String }))
        try model.weights.makeTrainable()
        defer { model.weights.dropTrainable() }
        let (b, targets) = f.documentBatch
        let n = (f.batch["n_targets"] as! NSNumber).intValue
        let totals = try model.trainingPass(b, targets: targets, lossScale: 1 / Float(n),
                                            activations: ForwardActivations(mode: .keepLayers), gradients: LayerGradients())
        let ref = (f.json["loss_f64"] as! NSNumber).doubleValue
        #expect(totals.targets == n)
        #expect(abs(totals.lossSum / Double(n) - ref) <= 1e-6 * ref, "loss \(totals.lossSum / Double(n)) vs \(ref)")
        let params = Dictionary(uniqueKeysWithValues: model.weights.parameters.map { ($0.name, $0) })
        var worst = 0.0
        for t in f.tensors {
            let name = t["name"] as! String, off = (t["offset"] as! NSNumber).intValue, count = (t["count"] as! NSNumber).intValue
            #expect(loaded[name]! == Array(initial[off..<off + count]), "\(name): loaded weights differ")
            let p = try #require(params[name])
            let g = Array(UnsafeBufferPointer(start: try #require(p.gradient), count: p.count))
            let r = Self.relative(g[...], grads[off..<off + count])
            worst = max(worst, r)
            #expect(r <= 1e-5, "\(name): gradient off by \(r)")
        }
        print("\(name): loss \(totals.lossSum / Double(n)) vs \(ref); worst gradient tensor \(worst)")
    }

    /// 10 AdamW steps (lr 1e-3, betas 0.9/0.999, eps 1e-8, wd 0.01) on the same batch
    /// through the trainer and the library's optimizer: weights within 1e-4 of float64
    /// per tensor (max|diff| / max|ref|), the elements TRAIN.md lists as in AdamW's
    /// eps regime (|grad| ≲ 1e-5, where float32 noise decides the first steps' sign)
    /// within 2·lr·10 absolute; the loss sequence within 1e-5 absolute.
    @Test(arguments: ["tiny_tied", "tiny_untied"]) func tinyAdamWStepsMatchPyTorch(name: String) throws {
        let f = try Self.fixture(name)
        let (model, _) = try HFModel.load(path: f.dir)
        let adam = f.json["adamw"] as! [String: Any]
        let expected = try f.floats("adamw_weights_step10_f64.f32")
        let losses = (adam["losses_f64"] as! [NSNumber]).map(\.doubleValue)
        let eps = (adam["eps_regime_elements"] as! [String: [NSNumber]]).mapValues { Set($0.map(\.intValue)) }
        var o = TrainerOptions()
        o.microBatchTokens = 128
        let trainer = try Trainer(model: model, options: o)
        let opt = Optimizer(algorithm: .adamw)
        var h = OptimizerHyperparameters.defaults(for: .adamw)
        h.lr = 1e-3
        h.beta1 = 0.9
        h.beta2 = 0.999
        h.eps = 1e-8
        h.weightDecay = 0.01
        try trainer.register(in: opt, group: try opt.addGroup(h))
        let (b, targets) = f.documentBatch
        for step in 0..<10 {
            try trainer.microBatch(b, targets: targets)
            let (totals, _) = try trainer.step(opt)
            #expect(abs(totals.meanLoss - losses[step]) <= 1e-5, "step \(step + 1): loss \(totals.meanLoss) vs \(losses[step])")
        }
        let params = Dictionary(uniqueKeysWithValues: trainer.parameters.map { ($0.name, $0) })
        var worst = 0.0
        for t in f.tensors {
            let name = t["name"] as! String, off = (t["offset"] as! NSNumber).intValue, count = (t["count"] as! NSNumber).intValue
            let p = try #require(params[name])
            var ours = Array(UnsafeBufferPointer(start: try #require(p.values), count: p.count))
            var ref = Array(expected[off..<off + count])
            for i in eps[name] ?? [] {
                #expect(abs(ours[i] - ref[i]) <= 2 * 1e-3 * 10, "\(name)[\(i)] (eps regime)")
                ours[i] = 0
                ref[i] = 0
            }
            let r = Self.relative(ours[...], ref[...])
            worst = max(worst, r)
            #expect(r <= 1e-4, "\(name): weights after 10 steps off by \(r)")
        }
        print("\(name): weights after 10 AdamW steps, worst tensor \(worst)")
    }

    /// The real default model (SmolLM2-135M Q4_1, dequantized): loss within 1e-5 relative
    /// of float64, and for every tensor the 64 sampled gradient values (the largest |g|
    /// among them) within 2.5e-4 of max|g| (float64): PyTorch's own float32 run is off by
    /// up to 2.4e-4 on these samples (5e-4 over whole tensors, TRAIN.md); ours measured
    /// 2.3e-4 at worst (blk.23.ffn_norm, where PyTorch's is 2.4e-4), most tensors < 1e-4.
    @Test func smolLM2GradientsMatchPyTorch() throws {
        guard TestModel.available else {
            Issue.record("the default model is missing: run make test (it fetches the model)")
            return
        }
        let f = try Self.fixture("smollm2")
        let model = try Transformer(gguf: try GGUFFile(path: TestModel.path), weights: .float32)
        try model.weights.makeTrainable()
        defer { model.weights.dropTrainable() }
        let (b, targets) = f.documentBatch
        let n = (f.batch["n_targets"] as! NSNumber).intValue
        let totals = try model.trainingPass(b, targets: targets, lossScale: 1 / Float(n),
                                            activations: ForwardActivations(mode: .recompute), gradients: LayerGradients())
        let ref = (f.json["loss_f64"] as! NSNumber).doubleValue
        #expect(abs(totals.lossSum / Double(n) - ref) <= 1e-5 * ref, "loss \(totals.lossSum / Double(n)) vs \(ref)")
        let samples = try f.floats("grad_samples_f64.f32")
        let params = Dictionary(uniqueKeysWithValues: model.weights.parameters.map { ($0.name, $0) })
        var worst = (0.0, "")
        #expect(f.tensors.count == params.count)
        for t in f.tensors {
            let name = t["name"] as! String, off = (t["offset"] as! NSNumber).intValue
            let indices = (t["indices"] as! [NSNumber]).map(\.intValue)
            let maxRef = (t["max_abs_grad_f64"] as! NSNumber).doubleValue
            let g = try #require(params[name]?.gradient)
            var e = 0.0
            for (k, i) in indices.enumerated() { e = max(e, Double(abs(g[i] - samples[off + k]))) }
            let r = e / maxRef
            if r > worst.0 { worst = (r, name) }
            let torch = (t["f32_vs_f64_samples"] as! NSNumber).doubleValue
            #expect(r <= 2.5e-4, "\(name): sampled gradient off by \(r) of max |g| (PyTorch float32: \(torch))")
        }
        print("smollm2: loss \(totals.lossSum / Double(n)) vs \(ref); worst sampled tensor \(worst.1) \(worst.0)")
    }
}
