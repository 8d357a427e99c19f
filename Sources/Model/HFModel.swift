import BCCore
import BCFormats
import BCTokenizer
#if canImport(Glibc)
import Glibc
#endif

/// Hugging Face Llama-family checkpoints: a directory with `config.json`,
/// `model.safetensors` (or `model.safetensors.index.json` and its shards),
/// `tokenizer.json` and optionally `tokenizer_config.json`.
///
/// Tensor names and the q/k row permutation between HF's rotate-half RoPE layout and
/// batchcore's (llama.cpp's) adjacent pairs come from `LlamaTensorNames`: q_proj and
/// k_proj rows are permuted per head at load and permuted back on export.
package enum HFModel {
    /// Whether `path` names a Hugging Face layout (a directory, a `.safetensors`
    /// file, or a `.safetensors.index.json`) rather than a GGUF file.
    package static func isHuggingFacePath(_ path: String) -> Bool {
        isDirectory(path) || path.hasSuffix(".safetensors") || path.hasSuffix(".safetensors.index.json")
    }

    /// The directory holding config.json etc. for `path`.
    static func directory(of path: String) -> String {
        if isDirectory(path) { return path }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count > 1 else { return "." }
        let dir = parts.dropLast().joined(separator: "/")
        return dir.isEmpty ? "/" : dir
    }

    // MARK: Config

    /// Reads a `config.json`. Accepts LlamaForCausalLM and MistralForCausalLM without
    /// a sliding window; rope_scaling other than null, biases, activations other than
    /// SiLU and a head_dim other than hidden_size / num_attention_heads throw
    /// `.unsupported`.
    package static func config(json: JSONValue) throws -> ModelConfig {
        guard let obj = json.objectValue else { throw BatchCoreError.format("config.json: not a JSON object") }
        func fail(_ m: String) -> BatchCoreError { BatchCoreError.format("config.json: \(m)") }
        func unsupported(_ m: String) -> BatchCoreError { BatchCoreError(.unsupported, "config.json: \(m)") }
        func present(_ k: String) -> JSONValue? {
            guard let v = obj[k], !v.isNull else { return nil }
            return v
        }
        func int(_ k: String, default d: Int? = nil) throws -> Int {
            guard let v = present(k) else {
                if let d { return d }
                throw fail("missing \(k)")
            }
            guard let i = v.intValue, i > 0, i <= 1 << 30 else { throw fail("\(k) is not a positive integer") }
            return i
        }
        func double(_ k: String, default d: Double) throws -> Double {
            guard let v = present(k) else { return d }
            guard let x = v.doubleValue, x.isFinite else { throw fail("\(k) is not a number") }
            return x
        }
        func bool(_ k: String, default d: Bool) throws -> Bool {
            guard let v = present(k) else { return d }
            guard let b = v.boolValue else { throw fail("\(k) is not a boolean") }
            return b
        }

        var arch: String? = nil
        if let a = present("architectures") {
            guard let list = a.arrayValue, let first = list.first?.stringValue, list.count == 1 else {
                throw fail("architectures is not a one-element array of strings")
            }
            arch = first
        } else if let mt = present("model_type")?.stringValue {
            arch = mt == "llama" ? "LlamaForCausalLM" : mt == "mistral" ? "MistralForCausalLM" : mt
        }
        guard let arch else { throw fail("no architectures") }
        switch arch {
        case "LlamaForCausalLM": break
        case "MistralForCausalLM":
            if let sw = present("sliding_window") {
                guard let w = sw.intValue, w >= (try int("max_position_embeddings", default: 2048)) else {
                    throw unsupported("sliding-window attention (sliding_window \(sw.serialized())) is not supported")
                }
            }
        default:
            throw unsupported("architecture \(arch) is not supported (LlamaForCausalLM or MistralForCausalLM)")
        }
        if present("rope_scaling") != nil {
            throw unsupported("rope_scaling \(obj["rope_scaling"]!.serialized().prefix(200)) is not supported")
        }
        if let act = present("hidden_act") ?? present("hidden_activation") {
            guard act.stringValue == "silu" || act.stringValue == "swish" else {
                throw unsupported("hidden_act \(act.serialized().prefix(40)) is not supported (silu only)")
            }
        }
        if try bool("attention_bias", default: false) { throw unsupported("attention_bias is not supported") }
        if try bool("mlp_bias", default: false) { throw unsupported("mlp_bias is not supported") }
        if let p = present("partial_rotary_factor"), p.doubleValue != 1 {
            throw unsupported("partial_rotary_factor \(p.serialized()) is not supported")
        }

        let hidden = try int("hidden_size")
        let heads = try int("num_attention_heads")
        let kvHeads = try int("num_key_value_heads", default: heads)
        if present("head_dim") != nil {
            let hd = try int("head_dim")
            guard hd * heads == hidden else {
                throw unsupported("head_dim \(hd) × \(heads) heads differs from hidden_size \(hidden)")
            }
        }
        let eps = try double("rms_norm_eps", default: 1e-6)
        let theta = try double("rope_theta", default: 10000)
        guard eps > 0, eps < 1 else { throw fail("rms_norm_eps \(eps)") }
        guard theta > 1, theta < 1e12 else { throw fail("rope_theta \(theta)") }
        let c = ModelConfig(
            architecture: "llama", layerCount: try int("num_hidden_layers"), embeddingDim: hidden,
            headCount: heads, kvHeadCount: kvHeads, feedForwardDim: try int("intermediate_size"),
            vocabSize: try int("vocab_size"), contextLength: try int("max_position_embeddings", default: 2048),
            ropeBase: Float(theta), rmsEps: Float(eps),
            tiedEmbeddings: try bool("tie_word_embeddings", default: false))
        try c.validate()
        return c
    }

    /// The float32 value's shortest decimal form as a Double (so 1e-5f is written
    /// "1e-05", and reads back as the same float).
    static func shortDouble(_ f: Float) -> Double { Double("\(f)") ?? Double(f) }

    /// `config.json` for `c` (LlamaForCausalLM).
    package static func configJSON(_ c: ModelConfig, dtype: SafetensorsDType = .f32,
                                  bos: Int32? = nil, eos: Int32? = nil) -> JSONValue {
        let torchDtype = dtype == .bf16 ? "bfloat16" : dtype == .f16 ? "float16" : "float32"
        var pairs: [(String, JSONValue)] = [
            ("architectures", .array([.string("LlamaForCausalLM")])),
            ("model_type", .string("llama")),
            ("hidden_size", .int(Int64(c.embeddingDim))),
            ("intermediate_size", .int(Int64(c.feedForwardDim))),
            ("num_hidden_layers", .int(Int64(c.layerCount))),
            ("num_attention_heads", .int(Int64(c.headCount))),
            ("num_key_value_heads", .int(Int64(c.kvHeadCount))),
            ("head_dim", .int(Int64(c.headDim))),
            ("hidden_act", .string("silu")),
            ("rms_norm_eps", .double(shortDouble(c.rmsEps))),
            ("rope_theta", .double(shortDouble(c.ropeBase))),
            ("rope_scaling", .null),
            ("max_position_embeddings", .int(Int64(c.contextLength))),
            ("vocab_size", .int(Int64(c.vocabSize))),
            ("tie_word_embeddings", .bool(c.tiedEmbeddings)),
            ("attention_bias", .bool(false)),
            ("mlp_bias", .bool(false)),
            ("torch_dtype", .string(torchDtype)),
        ]
        if let bos { pairs.append(("bos_token_id", .int(Int64(bos)))) }
        if let eos { pairs.append(("eos_token_id", .int(Int64(eos)))) }
        return .object(JSONObject(pairs))
    }

    // MARK: Weights

    /// Loads the weights of `c` from HF tensors (names from `LlamaTensorNames`),
    /// checking every shape; q/k rows are permuted to the adjacent-pair RoPE layout.
    package static func loadWeights(_ st: SafetensorsCollection, config c: ModelConfig,
                                   progress: ((Double) -> Void)? = nil) throws -> ModelWeights {
        for name in st.tensorNames where name.hasSuffix(".bias") {
            throw BatchCoreError(.unsupported, "safetensors: bias tensor \(name) is not supported")
        }
        let hasHead = st.tensor(named: LlamaTensor.output.huggingFaceName(layer: 0)) != nil
        if !c.tiedEmbeddings && !hasHead {
            throw BatchCoreError.format("safetensors: no lm_head.weight and tie_word_embeddings is false")
        }
        let tmp = try Scratch(c.embeddingDim * c.embeddingDim)
        return try ModelWeights(config: c, tiedOutput: c.tiedEmbeddings || !hasHead, progress: progress) { n, rows, cols, dst in
            let name = n.huggingFace
            guard let info = st.tensor(named: name) else { throw BatchCoreError.format("safetensors: missing tensor \(name)") }
            let expected = rows == 1 ? [cols] : [rows, cols]
            guard info.shape == expected else {
                throw BatchCoreError.format("safetensors: tensor \(name) has shape \(info.shape), expected \(expected)")
            }
            if let heads = n.tensor.ropeHeads(c) {
                try st.floats(name, into: tmp.pointer)
                LlamaTensorNames.permuteRoPERows(tmp.pointer, dst, heads: heads, headDim: c.headDim, cols: cols, inverse: false)
            } else {
                try st.floats(name, into: dst)
            }
        }
    }

    /// Loads the transformer and tokenizer of a HF directory (or of the directory of
    /// a `.safetensors` / `.safetensors.index.json` path).
    package static func load(path: String, progress: ((Double) -> Void)? = nil) throws -> (Transformer, Tokenizer) {
        let dir = directory(of: path)
        let configBytes: [UInt8]
        do { configBytes = try readWholeFile(dir + "/config.json", maxSize: 16 << 20) } catch let e as BatchCoreError where e.kind == .notFound {
            // The caller asked to load a model from a path that holds none.
            throw BatchCoreError.io("cannot open a model at \(path): not a GGUF file and no config.json in \(dir)")
        }
        let configJSON = try JSONValue.parse(configBytes)
        let config = try self.config(json: configJSON)
        let tokenizer = try Tokenizer(huggingFaceDirectory: dir, modelConfig: configJSON)
        let st: SafetensorsCollection
        if isDirectory(path) {
            st = try SafetensorsCollection(directory: path)
        } else if path.hasSuffix(".index.json") {
            st = try SafetensorsCollection(indexPath: path)
        } else {
            st = try SafetensorsCollection(files: [SafetensorsFile(path: path)])
        }
        let weights = try loadWeights(st, config: config, progress: progress)
        return (Transformer(config: config, weights: weights), tokenizer)
    }
}

extension ModelWeights {
    /// Writes these weights as HF Llama tensors to `<directory>/model.safetensors`
    /// and `config` as `<directory>/config.json` (the directory must exist). q/k rows
    /// are permuted back to the rotate-half layout.
    package func writeHuggingFace(directory: String, config c: ModelConfig, dtype: SafetensorsDType = .f32,
                                 bos: Int32? = nil, eos: Int32? = nil) throws {
        guard isDirectory(directory) else { throw BatchCoreError.io("\(directory) is not a directory") }
        var mine = config
        mine.tiedEmbeddings = c.tiedEmbeddings
        guard c == mine else {
            throw BatchCoreError.invalid("writeHuggingFace: weights do not match the config")
        }
        var w = SafetensorsWriter()
        w.metadata["format"] = "pt"
        let largest = LlamaTensor.allCases.map { $0.shape(c).rows * $0.shape(c).cols }.max() ?? 0
        let tmp = try Scratch(largest)
        let permuted = try Scratch(c.embeddingDim * c.embeddingDim)
        for n in LlamaTensorNames.all(layerCount: c.layerCount, tiedOutput: tiedOutput) {
            let (rows, cols) = n.tensor.shape(c)
            var src = tmp.pointer
            switch location(of: n) {
            case .vector(let v): src = v.data
            case .rows(let m, let first): m.copyRows(first, count: rows, into: tmp.pointer)
            case .adapter: throw BatchCoreError(.internal, "\(n.gguf) located as an adapter")
            }
            if let heads = n.tensor.ropeHeads(c) {
                LlamaTensorNames.permuteRoPERows(src, permuted.pointer, heads: heads, headDim: c.headDim, cols: cols,
                                                 inverse: true)
                src = permuted.pointer
            }
            try w.add(n.huggingFace, shape: rows == 1 ? [cols] : [rows, cols], dtype: dtype,
                      data: Array(UnsafeBufferPointer(start: src, count: rows * cols)))
        }
        var written = c
        written.tiedEmbeddings = tiedOutput
        try withExtendedLifetime(self) { try w.write(to: directory + "/model.safetensors") }
        try writeTextFile(directory + "/config.json",
                          HFModel.configJSON(written, dtype: dtype, bos: bos, eos: eos).serialized(pretty: true) + "\n")
    }
}

extension Transformer {
    /// Writes config.json and model.safetensors to `directory`.
    package func writeHuggingFace(directory: String, dtype: SafetensorsDType = .f32) throws {
        try weights.writeHuggingFace(directory: directory, config: config, dtype: dtype)
    }
}

extension LanguageModel {
    /// Writes the model as a HF directory (created if missing): config.json,
    /// model.safetensors, tokenizer.json and tokenizer_config.json.
    package func writeHuggingFace(directory: String, dtype: SafetensorsDType = .f32) throws {
        if !isDirectory(directory) {
            guard mkdir(directory, 0o755) == 0 else {
                throw BatchCoreError.io("cannot create \(directory): \(String(cString: strerror(errno)))")
            }
        }
        try transformer.weights.writeHuggingFace(directory: directory, config: config, dtype: dtype,
                                                 bos: tokenizer.bos, eos: tokenizer.eos)
        try tokenizer.writeHuggingFace(directory: directory)
    }
}
