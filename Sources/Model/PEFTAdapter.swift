import BCCore
import BCFormats
#if canImport(Glibc)
import Glibc
#endif

/// Hugging Face PEFT LoRA adapter directories for LlamaForCausalLM:
///
///     adapter_config.json         peft_type "LORA", task_type "CAUSAL_LM", r, lora_alpha,
///                                 lora_dropout, use_rslora, target_modules, rank_pattern, alpha_pattern,
///                                 base_model_name_or_path, ... (the fields PEFT writes)
///     adapter_model.safetensors   base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight [r × in]
///                                 ....lora_B.weight [out × r], per layer and target module
///
/// B of q_proj and k_proj is stored in Hugging Face's rotate-half row order and held in
/// batchcore's (`LlamaTensor`), permuted at read and write like the base q/k weights.
/// rank_pattern/alpha_pattern keys are module names ("q_proj"); PEFT features batchcore
/// does not implement (DoRA, layers_to_transform, bias, fan_in_fan_out,
/// modules_to_save, regex target_modules, lora_bias, QALoRA, target_parameters,
/// exclude_modules, layer_replication, trainable tokens, aLoRA) are refused, not ignored.
extension LoRAAdapterSet {
    package static let configFile = "adapter_config.json"
    package static let weightsFile = "adapter_model.safetensors"

    /// The largest adapter_config.json read.
    static let maxConfigBytes = 1 << 20

    /// Writes `adapter_config.json` and `adapter_model.safetensors` (float32) into
    /// `directory` (created if missing; the files are replaced atomically).
    package func writePEFT(directory: String, baseModel: String) throws {
        if !isDirectory(directory) {
            guard mkdir(directory, 0o755) == 0 else {
                throw BatchCoreError.io("cannot create \(directory): \(String(cString: strerror(errno)))")
            }
        }
        var w = SafetensorsWriter()
        w.metadata["format"] = "pt"
        for e in entries {
            let s = e.slot, path = e.target.peftPath(layer: e.layer)
            try w.add(path + ".lora_A.weight", shape: [s.rank, s.cols], data: Array(UnsafeBufferPointer(start: s.a, count: s.rank * s.cols)))
            var b = [Float](repeating: 0, count: s.rows * s.rank)
            if let heads = e.target.tensor.ropeHeads(model) {
                b.withUnsafeMutableBufferPointer {
                    LlamaTensorNames.permuteRoPERows(s.b, $0.baseAddress!, heads: heads, headDim: model.headDim, cols: s.rank,
                                                     inverse: true)
                }
            } else {
                b = Array(UnsafeBufferPointer(start: s.b, count: s.rows * s.rank))
            }
            try w.add(path + ".lora_B.weight", shape: [s.rows, s.rank], data: b)
        }
        try withExtendedLifetime(self) { try w.write(to: directory + "/" + Self.weightsFile) }
        try writeTextFile(directory + "/" + Self.configFile, peftConfigJSON(baseModel: baseModel).serialized(pretty: true) + "\n")
    }

    /// adapter_config.json as PEFT (0.1x) writes it for a LoRA of this shape.
    package func peftConfigJSON(baseModel: String) -> JSONValue {
        let targets = config.targets.sorted()
        func pattern<V>(_ p: [LoRATarget: V], _ value: (V) -> JSONValue) -> JSONValue {
            .object(JSONObject(p.keys.sorted().map { ($0.moduleName, value(p[$0]!)) }))
        }
        func number(_ d: Double) -> JSONValue { d == d.rounded() && abs(d) < 9e15 ? .int(Int64(d)) : .double(d) }
        return .object(JSONObject([
            ("alpha_pattern", pattern(config.alphaPattern, number)),
            ("auto_mapping", .null),
            ("base_model_name_or_path", .string(baseModel)),
            ("bias", .string("none")),
            ("fan_in_fan_out", .bool(false)),
            ("inference_mode", .bool(true)),
            ("init_lora_weights", .bool(true)),
            ("layers_pattern", .null),
            ("layers_to_transform", .null),
            ("lora_alpha", number(config.alpha)),
            ("lora_dropout", .double(config.dropout)),
            ("modules_to_save", .null),
            ("peft_type", .string("LORA")),
            ("r", .int(Int64(config.rank))),
            ("rank_pattern", pattern(config.rankPattern) { .int(Int64($0)) }),
            ("revision", .null),
            ("target_modules", .array(targets.map { .string($0.moduleName) })),
            ("task_type", .string("CAUSAL_LM")),
            ("use_dora", .bool(false)),
            ("use_rslora", .bool(config.rsLoRA)),
        ]))
    }

    /// Reads the LoRA configuration of an adapter_config.json; bad or unsupported
    /// fields throw `.format`/`.unsupported`.
    package static func parsePEFTConfig(_ json: JSONValue, seed: UInt64 = 0) throws -> LoRAConfig {
        func bad(_ m: String) -> BatchCoreError { BatchCoreError.format("\(configFile): \(m)") }
        guard json.objectValue != nil else { throw bad("not a JSON object") }
        guard json["peft_type"]?.stringValue == "LORA" else { throw bad("peft_type is not \"LORA\"") }
        if let t = json["task_type"], !t.isNull, t.stringValue != "CAUSAL_LM" { throw bad("task_type is not \"CAUSAL_LM\"") }
        var c = LoRAConfig()
        c.seed = seed
        guard let r = json["r"]?.intValue, r >= 1, r <= LoRASlot.maxRank else { throw bad("r is missing or outside 1...\(LoRASlot.maxRank)") }
        c.rank = r
        guard let alpha = json["lora_alpha"]?.doubleValue, alpha.isFinite else { throw bad("lora_alpha is missing or not a number") }
        c.alpha = alpha
        if let v = json["use_rslora"], !v.isNull {
            guard let b = v.boolValue else { throw bad("use_rslora is not a boolean") }
            c.rsLoRA = b
        }
        if let v = json["lora_dropout"], !v.isNull {
            guard let p = v.doubleValue, p >= 0, p < 1 else { throw bad("lora_dropout is not a number in 0 ≤ p < 1") }
            c.dropout = p
        }
        func unsupported(_ key: String, ok: (JSONValue) -> Bool) throws {
            if let v = json[key], !v.isNull, !ok(v) {
                throw BatchCoreError(.unsupported, "\(configFile): \(key) = \(v.serialized()) is not supported")
            }
        }
        try unsupported("use_dora") { $0.boolValue == false }
        try unsupported("fan_in_fan_out") { $0.boolValue == false }
        try unsupported("bias") { $0.stringValue == "none" }
        try unsupported("layers_to_transform") { _ in false }
        try unsupported("modules_to_save") { $0.arrayValue?.isEmpty == true }
        // Newer PEFT fields that change what the adapter computes (null/false/empty: absent).
        try unsupported("lora_bias") { $0.boolValue == false }
        try unsupported("use_qalora") { $0.boolValue == false }
        try unsupported("use_bdlora") { $0.boolValue == false }
        try unsupported("target_parameters") { $0.arrayValue?.isEmpty == true }
        try unsupported("exclude_modules") { $0.arrayValue?.isEmpty == true }
        try unsupported("layer_replication") { _ in false }
        try unsupported("trainable_token_indices") { _ in false }
        try unsupported("alora_invocation_tokens") { _ in false }
        guard let list = json["target_modules"]?.arrayValue, !list.isEmpty else {
            throw BatchCoreError(.unsupported, "\(configFile): target_modules must be a non-empty list of q_proj ... down_proj")
        }
        var targets: [LoRATarget] = []
        for v in list {
            guard let name = v.stringValue, let t = LoRATarget(moduleName: name) else {
                throw BatchCoreError(.unsupported, "\(configFile): target module \(v.serialized()) is not one of "
                    + LoRATarget.allCases.map(\.moduleName).joined(separator: ", "))
            }
            guard !targets.contains(t) else { throw bad("target module \(name) is repeated") }
            targets.append(t)
        }
        c.targets = targets.sorted()
        func patternTarget(_ key: String, _ field: String) throws -> LoRATarget {
            guard let t = LoRATarget(moduleName: key) else {
                throw BatchCoreError(.unsupported, "\(configFile): \(field) key \"\(key)\" (only module names are supported)")
            }
            return t
        }
        if let p = json["rank_pattern"], !p.isNull {
            guard let o = p.objectValue else { throw bad("rank_pattern is not an object") }
            for k in o.keys {
                guard let r = o[k]?.intValue, r >= 1, r <= LoRASlot.maxRank else { throw bad("rank_pattern[\(k)] outside 1...\(LoRASlot.maxRank)") }
                c.rankPattern[try patternTarget(k, "rank_pattern")] = r
            }
        }
        if let p = json["alpha_pattern"], !p.isNull {
            guard let o = p.objectValue else { throw bad("alpha_pattern is not an object") }
            for k in o.keys {
                guard let a = o[k]?.doubleValue, a.isFinite else { throw bad("alpha_pattern[\(k)] is not a number") }
                c.alphaPattern[try patternTarget(k, "alpha_pattern")] = a
            }
        }
        do { try c.validate() } catch let e as BatchCoreError { throw bad(e.message) }
        return c
    }

    /// Reads a PEFT adapter directory made for a model of shape `model`: every tensor
    /// the config implies must be there with its exact shape, and nothing else.
    package static func readPEFT(directory: String, model: ModelConfig) throws -> LoRAAdapterSet {
        let bytes = try readWholeFile(directory + "/" + configFile, maxSize: maxConfigBytes)
        let config = try parsePEFTConfig(try JSONValue.parse(bytes))
        let file = try SafetensorsFile(path: directory + "/" + weightsFile)
        var expected = Set<String>()
        var slots: [[LoRASlot]] = []
        for l in 0..<model.layerCount {
            var layer: [LoRASlot] = []
            for t in config.targets {
                let (rows, cols) = t.tensor.shape(model), r = config.rank(t), path = t.peftPath(layer: l)
                let nameA = path + ".lora_A.weight", nameB = path + ".lora_B.weight"
                expected.insert(nameA)
                expected.insert(nameB)
                for (name, shape) in [(nameA, [r, cols]), (nameB, [rows, r])] {
                    guard let info = file.tensor(named: name) else { throw BatchCoreError.format("\(weightsFile): missing tensor \(name)") }
                    guard info.shape == shape else {
                        throw BatchCoreError.format("\(weightsFile): \(name) has shape \(info.shape), expected \(shape) "
                            + "(rank \(r) on a \(rows) × \(cols) projection)")
                    }
                }
                let a = try file.floats(nameA)
                var b = try file.floats(nameB)
                guard a.allSatisfy(\.isFinite), b.allSatisfy(\.isFinite) else {
                    throw BatchCoreError.format("\(weightsFile): \(path) holds a non-finite value")
                }
                if let heads = t.tensor.ropeHeads(model) {
                    let hf = b
                    hf.withUnsafeBufferPointer { src in
                        b.withUnsafeMutableBufferPointer {
                            LlamaTensorNames.permuteRoPERows(src.baseAddress!, $0.baseAddress!, heads: heads, headDim: model.headDim,
                                                             cols: r, inverse: false)
                        }
                    }
                }
                layer.append(try LoRASlot(rows: rows, cols: cols, rank: r, scale: config.scale(t), a: a, b: b))
            }
            slots.append(layer)
        }
        if let extra = file.tensors.first(where: { !expected.contains($0.name) }) {
            throw BatchCoreError.format("\(weightsFile): tensor \(extra.name) does not belong to this adapter "
                + "(a different layer count or target modules?)")
        }
        return try LoRAAdapterSet(config: config, model: model, slots: slots)
    }
}
