import BCCore
import BCFormats
#if canImport(Glibc)
import Glibc
#endif

/// LoRA adapters as a llama.cpp GGUF adapter file (what convert_lora_to_gguf.py writes
/// and llama-adapter.cpp reads):
///
///     general.architecture   "llama" (must match the base model)
///     general.type           "adapter"
///     adapter.type           "lora"
///     adapter.lora.alpha     float32; llama.cpp scales each B·A by alpha / r, r = the
///                            tensor's rank (alpha 0 or absent: scale 1)
///     blk.N.attn_q.weight.lora_a   ggml dims [n_in, r]   (= A [r × n_in] row-major)
///     blk.N.attn_q.weight.lora_b   ggml dims [r, n_out]  (= B [n_out × r] row-major)
///     ... for attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down
///
/// B of attn_q/attn_k is in llama.cpp's (= batchcore's) RoPE row order: the converter
/// permutes the LoRA B rows like the base q/k weights, so no permutation here.
///
/// One alpha per file: a per-module scale that is not alpha / r (rsLoRA, alpha_pattern)
/// is folded into B when writing (B' = B · scale / (alpha / r)), so llama.cpp and
/// `readGGUF` apply the same ΔW = scale·B·A. Written tensors are F32; any type
/// `dequantize` reads (F32, F16, BF16, Q8_0, ...) is accepted.
extension LoRAAdapterSet {
    /// The GGUF name of an adapter tensor: "blk.N.attn_q.weight.lora_a" / ".lora_b".
    package static func ggufName(_ t: LoRATarget, layer: Int, isB: Bool) -> String {
        t.tensor.ggufName(layer: layer) + (isB ? ".lora_b" : ".lora_a")
    }

    /// The scale llama.cpp applies to B·A for `alpha` and rank `r`.
    static func llamaCppScale(alpha: Double, rank: Int) -> Double { alpha != 0 ? alpha / Double(rank) : 1 }

    /// Writes the adapters as one GGUF adapter file at `path` (atomically).
    package func writeGGUF(path: String) throws {
        var w = GGUFWriter()
        w.set("general.architecture", .string(model.architecture))
        w.set("general.type", .string("adapter"))
        w.set("adapter.type", .string("lora"))
        w.set("adapter.lora.alpha", .float32(Float(config.alpha)))
        let alpha = Double(Float(config.alpha))
        for e in entries {
            let s = e.slot
            let fold = Double(s.scale) / Self.llamaCppScale(alpha: alpha, rank: s.rank)
            guard fold.isFinite else { throw BatchCoreError.invalid("LoRA \(e.target.moduleName): scale \(s.scale) cannot be written with alpha \(alpha)") }
            let a = Array(UnsafeBufferPointer(start: s.a, count: s.rank * s.cols))
            var b = Array(UnsafeBufferPointer(start: s.b, count: s.rows * s.rank))
            if fold != 1 { for i in b.indices { b[i] = Float(Double(b[i]) * fold) } }
            guard b.allSatisfy(\.isFinite) else { throw BatchCoreError.invalid("LoRA \(e.target.moduleName): B overflows when its scale is folded in") }
            try w.addTensor(name: Self.ggufName(e.target, layer: e.layer, isB: false), dims: [s.cols, s.rank], floats: a)
            try w.addTensor(name: Self.ggufName(e.target, layer: e.layer, isB: true), dims: [s.rank, s.rows], floats: b)
        }
        try withExtendedLifetime(self) { try w.write(to: path) }
    }

    /// Reads a GGUF LoRA adapter file made for a model of shape `model`. Every tensor
    /// must be an adapter of one of q, k, v, o, gate, up, down of a layer < layerCount; a
    /// module adapted in one layer must be adapted in all, with one rank; shapes must
    /// match the base; values must be finite. Anything else throws `.format` or
    /// `.unsupported`; nothing is kept on failure.
    package static func readGGUF(path: String, model: ModelConfig) throws -> LoRAAdapterSet {
        let file = try GGUFFile(path: path)
        return try withExtendedLifetime(file) { try readGGUF(file, model: model, name: path) }
    }

    package static func readGGUF(_ file: GGUFFile, model: ModelConfig, name: String) throws -> LoRAAdapterSet {
        func bad(_ m: String) -> BatchCoreError { BatchCoreError.format("\(name): \(m)") }
        guard file.value("general.type")?.stringValue == "adapter" else { throw bad("general.type is not \"adapter\"") }
        guard let arch = file.value("general.architecture")?.stringValue else { throw bad("no general.architecture") }
        guard arch == model.architecture else { throw bad("adapter for architecture \"\(arch)\", the model is \"\(model.architecture)\"") }
        guard let type = file.value("adapter.type")?.stringValue else { throw bad("no adapter.type") }
        guard type == "lora" else { throw BatchCoreError(.unsupported, "\(name): adapter.type \"\(type)\" (only \"lora\")") }
        var alpha = 0.0
        if let v = file.value("adapter.lora.alpha") {
            guard let d = v.doubleValue, d.isFinite, abs(d) < 1e30 else { throw bad("adapter.lora.alpha is not a finite number") }
            alpha = d
        }
        // Which (layer, target) pairs the file holds, and each target's rank.
        var ranks: [LoRATarget: Int] = [:]
        var found = Set<String>()
        for t in file.tensors {
            found.insert(t.name)
            guard let (layer, target, isB) = parseName(t.name, layerCount: model.layerCount) else {
                throw BatchCoreError(.unsupported, "\(name): tensor \(t.name) is not a LoRA adapter of q, k, v, o, gate, up or down "
                    + "of a layer below \(model.layerCount)")
            }
            _ = layer
            let (rows, cols) = target.tensor.shape(model)
            guard t.dims.count == 2 else { throw bad("\(t.name) has dims \(t.dims), expected 2") }
            let r = isB ? t.dims[0] : t.dims[1]
            guard r >= 1, r <= LoRASlot.maxRank else { throw bad("\(t.name) has rank \(r), outside 1...\(LoRASlot.maxRank)") }
            let expected = isB ? [r, rows] : [cols, r]
            guard t.dims == expected else {
                throw bad("\(t.name) has ggml dims \(t.dims), expected \(expected) (the base is \(rows) × \(cols))")
            }
            if let r0 = ranks[target], r0 != r {
                throw BatchCoreError(.unsupported, "\(name): \(target.moduleName) has rank \(r0) and \(r) in different tensors")
            }
            ranks[target] = r
            guard t.type.canDequantize else { throw BatchCoreError(.unsupported, "\(name): \(t.name) has type \(t.type)") }
        }
        guard !ranks.isEmpty else { throw bad("no LoRA tensors") }
        let targets = ranks.keys.sorted()
        var config = LoRAConfig()
        config.targets = targets
        config.rank = ranks[targets[0]]!
        for t in targets where ranks[t]! != config.rank { config.rankPattern[t] = ranks[t]! }
        if alpha != 0 {
            config.alpha = alpha
        } else {  // llama.cpp: scale 1, i.e. alpha = r per module
            config.alpha = Double(config.rank)
            for t in targets where ranks[t]! != config.rank { config.alphaPattern[t] = Double(ranks[t]!) }
        }
        do { try config.validate() } catch let e as BatchCoreError { throw bad(e.message) }
        var slots: [[LoRASlot]] = []
        for l in 0..<model.layerCount {
            var layer: [LoRASlot] = []
            for t in targets {
                let (rows, cols) = t.tensor.shape(model), r = ranks[t]!
                let nameA = ggufName(t, layer: l, isB: false), nameB = ggufName(t, layer: l, isB: true)
                guard found.contains(nameA), found.contains(nameB) else {
                    throw bad("missing \(found.contains(nameA) ? nameB : nameA) (\(t.moduleName) is adapted in other layers)")
                }
                let a = try file.dequantizeTensor(nameA), b = try file.dequantizeTensor(nameB)
                guard a.allSatisfy(\.isFinite), b.allSatisfy(\.isFinite) else { throw bad("\(nameA)/\(nameB) hold a non-finite value") }
                layer.append(try LoRASlot(rows: rows, cols: cols, rank: r, scale: config.scale(t), a: a, b: b))
            }
            slots.append(layer)
        }
        return try LoRAAdapterSet(config: config, model: model, slots: slots)
    }

    /// (layer, target, isB) of "blk.N.<tensor>.weight.lora_a|lora_b"; nil for anything else.
    static func parseName(_ s: String, layerCount: Int) -> (Int, LoRATarget, Bool)? {
        let isB: Bool
        if s.hasSuffix(".lora_a") { isB = false } else if s.hasSuffix(".lora_b") { isB = true } else { return nil }
        let base = String(s.dropLast(7))
        guard base.hasPrefix("blk.") else { return nil }
        let rest = base.dropFirst(4)
        guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]), layer >= 0, layer < layerCount,
              String(layer) == rest[..<dot] else { return nil }
        guard let t = LoRATarget.allCases.first(where: { $0.tensor.ggufName(layer: layer) == base }) else { return nil }
        return (layer, t, isB)
    }

    /// Reads an adapter in either format: a directory is a PEFT adapter
    /// (`readPEFT`), a file a GGUF adapter (`readGGUF`).
    package static func read(path: String, model: ModelConfig) throws -> LoRAAdapterSet {
        var st = stat()
        guard stat(path, &st) == 0 else { throw BatchCoreError(.notFound, "LoRA adapter \(path): \(String(cString: strerror(errno)))") }
        if (st.st_mode & S_IFMT) == S_IFDIR { return try readPEFT(directory: path, model: model) }
        return try readGGUF(path: path, model: model)
    }
}
