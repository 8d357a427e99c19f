import BCCore
import BCFormats
/// Hugging Face `tokenizer.json` (+ `tokenizer_config.json`) ⇄ `Tokenizer`.
///
/// Supported: byte-level BPE models (no normalizer, no byte fallback, no subword
/// prefixes/suffixes) with one of the pre-tokenizers the GGUF path supports:
/// - `Sequence[Digits(individual_digits) | Split(\p{N}, Isolated), ByteLevel]` →
///   "smollm" ("starcoder" when tokenizer_config sets clean_up_tokenization_spaces);
/// - plain `ByteLevel` (use_regex) → "gpt2";
/// - `Sequence[Split(<Llama 3 regex>, Isolated), ByteLevel(use_regex: false)]` →
///   "llama-bpe" ("smaug-bpe" when the model sets ignore_merges false).
/// Anything else throws `.unsupported`. Added tokens with `special: true` (or that
/// look special, as llama.cpp's converter decides) are control tokens, the other
/// added tokens user-defined.
extension Tokenizer {
    static let llama3Regex =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// Loads `<directory>/tokenizer.json` and, when present,
    /// `<directory>/tokenizer_config.json` and `chat_template.jinja`. `modelConfig`
    /// (config.json) supplies bos/eos ids the tokenizer config does not name.
    package convenience init(huggingFaceDirectory dir: String, modelConfig: JSONValue? = nil) throws {
        let tj = try JSONValue.parse(try readWholeFile(dir + "/tokenizer.json", maxSize: 256 << 20))
        var tc: JSONValue? = nil
        if fileExists(dir + "/tokenizer_config.json") {
            tc = try JSONValue.parse(try readWholeFile(dir + "/tokenizer_config.json", maxSize: 64 << 20))
        }
        var template: String? = nil
        if fileExists(dir + "/chat_template.jinja") {
            template = String(decoding: try readWholeFile(dir + "/chat_template.jinja", maxSize: 16 << 20), as: UTF8.self)
        }
        try self.init(tokenizerJSON: tj, tokenizerConfig: tc, modelConfig: modelConfig, chatTemplate: template)
    }

    /// Builds a tokenizer from parsed `tokenizer.json` and (optional)
    /// `tokenizer_config.json` / `config.json`.
    package convenience init(tokenizerJSON tj: JSONValue, tokenizerConfig tc: JSONValue? = nil,
                            modelConfig mc: JSONValue? = nil, chatTemplate fileTemplate: String? = nil) throws {
        func fail(_ m: String) -> BatchCoreError { BatchCoreError.format("tokenizer.json: \(m)") }
        func unsupported(_ m: String) -> BatchCoreError { BatchCoreError(.unsupported, "tokenizer.json: \(m)") }
        func nonNull(_ v: JSONValue?) -> JSONValue? { (v?.isNull ?? true) ? nil : v }
        guard tj.objectValue != nil else { throw fail("not a JSON object") }
        guard let model = tj["model"]?.objectValue else { throw fail("no model object") }
        if let type = model["type"], type.stringValue != "BPE" {
            throw unsupported("model type \(type.serialized().prefix(40)) is not supported (BPE only)")
        }
        if model["byte_fallback"]?.boolValue == true { throw unsupported("byte_fallback BPE is not supported") }
        for k in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let v = nonNull(model[k]), v.stringValue != "" { throw unsupported("\(k) is not supported") }
        }
        if let n = nonNull(tj["normalizer"]) {
            let emptySequence = n["type"]?.stringValue == "Sequence" && (n["normalizers"]?.arrayValue?.isEmpty ?? false)
            if !emptySequence { throw unsupported("normalizer \(n["type"]?.serialized() ?? "?") is not supported") }
        }

        // Vocabulary: model.vocab plus added_tokens.
        guard let vocab = model["vocab"]?.objectValue else { throw fail("model.vocab is not an object") }
        let maxVocab = 1 << 22
        var byID: [Int: String] = [:]
        byID.reserveCapacity(vocab.count)
        var maxID = -1
        func place(_ text: String, _ idValue: JSONValue?) throws -> Int {
            guard let id = idValue?.intValue, id >= 0, id < maxVocab else {
                throw fail("token \(text.debugDescription.prefix(60)) has an invalid id")
            }
            if let other = byID[id], other != text {
                throw fail("id \(id) is both \(other.debugDescription.prefix(60)) and \(text.debugDescription.prefix(60))")
            }
            byID[id] = text
            maxID = Swift.max(maxID, id)
            return id
        }
        for (text, idValue) in vocab.pairs { _ = try place(text, idValue) }
        var special: [Int: Bool] = [:]
        if let added = nonNull(tj["added_tokens"]) {
            guard let list = added.arrayValue else { throw fail("added_tokens is not an array") }
            for t in list {
                guard let content = t["content"]?.stringValue else { throw fail("added token without content") }
                let id = try place(content, t["id"])
                special[id] = t["special"]?.boolValue ?? false
            }
        }
        guard maxID >= 0 else { throw fail("empty vocabulary") }
        let n = maxID + 1
        var tokens = [String](repeating: "", count: n)
        var types = [Int](repeating: Int(TokenType.normal.rawValue), count: n)
        for i in 0..<n {
            guard let text = byID[i] else {
                tokens[i] = "[PAD\(i)]"
                types[i] = Int(TokenType.unused.rawValue)
                continue
            }
            tokens[i] = text
            if let s = special[i] {
                types[i] = Int((s || Self.looksSpecial(text) ? TokenType.control : TokenType.userDefined).rawValue)
            }
        }

        // Merges: "left right" strings or [left, right] pairs.
        var merges: [String] = []
        if let m = nonNull(model["merges"]) {
            guard let list = m.arrayValue else { throw fail("model.merges is not an array") }
            merges.reserveCapacity(list.count)
            for (i, v) in list.enumerated() {
                if let s = v.stringValue {
                    merges.append(s)
                } else if let pair = v.arrayValue, pair.count == 2, let a = pair[0].stringValue, let b = pair[1].stringValue {
                    guard !a.isEmpty, !b.isEmpty else { throw fail("merge \(i) has an empty side") }
                    merges.append(a + " " + b)
                } else {
                    throw fail("merge \(i) is neither a string nor a pair of strings")
                }
            }
        }

        // Pre-tokenizer.
        let cleanUp = tc?["clean_up_tokenization_spaces"]?.boolValue ?? false
        let pre = try Self.detectPreTokenizer(nonNull(tj["pre_tokenizer"]), cleanUp: cleanUp,
                                              ignoreMerges: model["ignore_merges"]?.boolValue)

        // Special tokens.
        var textToID: [String: Int] = [:]
        textToID.reserveCapacity(n)
        for i in 0..<n { textToID[tokens[i]] = i }
        func tokenText(_ v: JSONValue?) -> String? {
            guard let v = nonNull(v) else { return nil }
            return v.stringValue ?? v["content"]?.stringValue
        }
        var ids: [String: Int32?] = [:]
        for (key, field, configField) in [("bos", "bos_token", "bos_token_id"), ("eos", "eos_token", "eos_token_id"),
                                           ("unknown", "unk_token", ""), ("padding", "pad_token", "pad_token_id")] {
            if let text = tokenText(tc?[field]) {
                ids[key] = textToID[text].map { Int32($0) }
            } else if !configField.isEmpty, let v = nonNull(mc?[configField]) {
                let id = v.intValue ?? v.arrayValue?.first?.intValue
                if let id { ids[key] = id >= 0 && id < n ? Int32(id) : Optional<Int32>.none }
            }
        }
        if ids["unknown"] == nil, let text = nonNull(model["unk_token"])?.stringValue {
            ids["unknown"] = textToID[text].map { Int32($0) }
        }
        var addBOS = tc?["add_bos_token"]?.boolValue
        var addEOS = tc?["add_eos_token"]?.boolValue
        // llama.cpp also reads them from a TemplateProcessing post-processor.
        if let post = nonNull(tj["post_processor"]), post["type"]?.stringValue == "TemplateProcessing",
           let single = post["single"]?.arrayValue, !single.isEmpty {
            func specialID(_ v: JSONValue) -> String? { v["SpecialToken"]?["id"]?.stringValue }
            if addBOS == nil { addBOS = specialID(single[0]) != nil && specialID(single[0]) == tokenText(tc?["bos_token"]) }
            if addEOS == nil, let last = single.last {
                addEOS = specialID(last) != nil && specialID(last) == tokenText(tc?["eos_token"])
            }
        }

        var template = fileTemplate
        if let t = nonNull(tc?["chat_template"]) {
            if let s = t.stringValue {
                template = s
            } else if let list = t.arrayValue {
                template = list.first { $0["name"]?.stringValue == "default" }?["template"]?.stringValue ?? template
            }
        }

        try self.init(model: "gpt2", pre: pre, tokens: tokens, types: types, merges: merges, ids: ids,
                      addBOS: addBOS, addEOS: addEOS, addSpacePrefix: false, chatTemplate: template)
    }

    /// llama.cpp's converter's guess for added tokens not flagged special.
    static func looksSpecial(_ t: String) -> Bool {
        if ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].contains(t) { return true }
        if t.hasPrefix("<|") && t.hasSuffix("|>") && t.count >= 4 { return true }
        if t.hasPrefix("<｜") && t.hasSuffix("｜>") && t.count >= 4 { return true }
        if t.hasPrefix("<start_of_") && t.hasSuffix(">") { return true }
        if t.hasPrefix("<end_of_") && t.hasSuffix(">") { return true }
        return false
    }

    /// The GGUF pre-tokenizer name equivalent to a `pre_tokenizer` object.
    static func detectPreTokenizer(_ p: JSONValue?, cleanUp: Bool, ignoreMerges: Bool?) throws -> String {
        func unsupported() -> BatchCoreError {
            BatchCoreError(.unsupported, "tokenizer.json: pre_tokenizer \(p?.serialized().prefix(300) ?? "null") is not supported")
        }
        guard let p else { throw unsupported() }
        func byteLevel(_ v: JSONValue, regex: Bool) -> Bool {
            v["type"]?.stringValue == "ByteLevel" && (v["add_prefix_space"]?.boolValue ?? false) == false
                && (v["use_regex"]?.boolValue ?? true) == regex
        }
        func split(_ v: JSONValue, _ pattern: String) -> Bool {
            v["type"]?.stringValue == "Split" && v["pattern"]?["Regex"]?.stringValue == pattern
                && v["behavior"]?.stringValue == "Isolated" && (v["invert"]?.boolValue ?? false) == false
        }
        if byteLevel(p, regex: true) { return "gpt2" }
        guard p["type"]?.stringValue == "Sequence", let list = p["pretokenizers"]?.arrayValue else { throw unsupported() }
        if list.count == 1, byteLevel(list[0], regex: true) { return "gpt2" }
        guard list.count == 2 else { throw unsupported() }
        let digits = (list[0]["type"]?.stringValue == "Digits" && list[0]["individual_digits"]?.boolValue == true)
            || split(list[0], #"\p{N}"#)
        if digits && byteLevel(list[1], regex: true) { return cleanUp ? "starcoder" : "smollm" }
        if split(list[0], llama3Regex) && byteLevel(list[1], regex: false) {
            return ignoreMerges == false ? "smaug-bpe" : "llama-bpe"
        }
        throw unsupported()
    }

    // MARK: Export

    /// The merges of the table in rank order, recovered from the vocabulary: every
    /// merge joins two tokens into the token whose text is their concatenation.
    func recoveredMerges() -> [(left: Int32, right: Int32)] {
        var found: [(rank: Int32, left: Int32, right: Int32)] = []
        for (m, text) in tokens.enumerated() {
            let u = Array(text.utf8)
            guard u.count >= 2 else { continue }
            for cut in 1..<u.count where u[cut] & 0xC0 != 0x80 {
                guard let l = textToID[Array(u[..<cut])], let r = textToID[Array(u[cut...])],
                      let hit = merges.lookup(l, r), hit.merged == Int32(m)
                else { continue }
                found.append((hit.rank, l, r))
            }
        }
        found.sort { $0.rank < $1.rank }
        return found.map { ($0.left, $0.right) }
    }

    /// The `pre_tokenizer` object for this tokenizer's pre-tokenizer.
    func preTokenizerJSON() -> JSONValue {
        func byteLevel(regex: Bool) -> JSONValue {
            .object(JSONObject([("type", .string("ByteLevel")), ("add_prefix_space", .bool(false)),
                                ("trim_offsets", .bool(true)), ("use_regex", .bool(regex))]))
        }
        func split(_ pattern: String) -> JSONValue {
            .object(JSONObject([("type", .string("Split")), ("pattern", .object(JSONObject([("Regex", .string(pattern))]))),
                                ("behavior", .string("Isolated")), ("invert", .bool(false))]))
        }
        func sequence(_ list: [JSONValue]) -> JSONValue {
            .object(JSONObject([("type", .string("Sequence")), ("pretokenizers", .array(list))]))
        }
        switch preTokenizer {
        case .gpt2: return byteLevel(regex: true)
        case .digitsThenGPT2: return sequence([split(#"\p{N}"#), byteLevel(regex: true)])
        case .llama3: return sequence([split(Self.llama3Regex), byteLevel(regex: false)])
        }
    }

    /// `tokenizer.json` for this tokenizer.
    package func huggingFaceTokenizerJSON() -> JSONValue {
        var vocab = JSONObject()
        var added: [JSONValue] = []
        for (i, t) in tokens.enumerated() {
            let type = tokenTypes[i]
            if type == .unused { continue }
            vocab[t] = .int(Int64(i))
            if type == .control || type == .userDefined || type == .unknown {
                added.append(.object(JSONObject([
                    ("id", .int(Int64(i))), ("content", .string(t)), ("single_word", .bool(false)),
                    ("lstrip", .bool(false)), ("rstrip", .bool(false)), ("normalized", .bool(false)),
                    ("special", .bool(type != .userDefined)),
                ])))
            }
        }
        let merges: [JSONValue] = recoveredMerges().map {
            .array([.string(tokens[Int($0.left)]), .string(tokens[Int($0.right)])])
        }
        let byteLevelDecoder = JSONValue.object(JSONObject([
            ("type", .string("ByteLevel")), ("add_prefix_space", .bool(true)), ("trim_offsets", .bool(true)),
            ("use_regex", .bool(true)),
        ]))
        return .object(JSONObject([
            ("version", .string("1.0")),
            ("truncation", .null),
            ("padding", .null),
            ("added_tokens", .array(added)),
            ("normalizer", .null),
            ("pre_tokenizer", preTokenizerJSON()),
            ("post_processor", byteLevelDecoder),
            ("decoder", byteLevelDecoder),
            ("model", .object(JSONObject([
                ("type", .string("BPE")), ("dropout", .null), ("unk_token", .null),
                ("continuing_subword_prefix", .null), ("end_of_word_suffix", .null), ("fuse_unk", .bool(false)),
                ("byte_fallback", .bool(false)), ("ignore_merges", .bool(ignoreMerges)),
                ("vocab", .object(vocab)), ("merges", .array(merges)),
            ]))),
        ]))
    }

    /// `tokenizer_config.json` for this tokenizer.
    package func huggingFaceTokenizerConfigJSON() -> JSONValue {
        var pairs: [(String, JSONValue)] = [
            ("add_bos_token", .bool(addBOS)),
            ("add_eos_token", .bool(addEOS)),
            ("clean_up_tokenization_spaces", .bool(cleanSpaces)),
            ("model_max_length", .int(1 << 30)),
            ("tokenizer_class", .string("PreTrainedTokenizerFast")),
        ]
        for (key, id) in [("bos_token", bos), ("eos_token", eos), ("unk_token", unk), ("pad_token", pad)] {
            pairs.append((key, id.map { .string(tokens[Int($0)]) } ?? .null))
        }
        if let chatTemplate { pairs.append(("chat_template", .string(chatTemplate))) }
        return .object(JSONObject(pairs))
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` to `directory`.
    package func writeHuggingFace(directory: String) throws {
        try writeTextFile(directory + "/tokenizer.json", huggingFaceTokenizerJSON().serialized(pretty: true) + "\n")
        try writeTextFile(directory + "/tokenizer_config.json",
                          huggingFaceTokenizerConfigJSON().serialized(pretty: true) + "\n")
    }
}
