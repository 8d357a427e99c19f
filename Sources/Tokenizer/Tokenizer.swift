import BCCore
import BCFormats
#if canImport(Glibc)
import Glibc
#endif

/// Byte-level BPE tokenizer of GGUF models with `tokenizer.ggml.model = "gpt2"`,
/// producing the same tokens as llama.cpp's `llama_tokenize` and the same bytes as
/// its `llama_token_to_piece` / `llama_detokenize`.
///
/// Supported pre-tokenizers (`tokenizer.ggml.pre`): "smollm" (and the other types
/// llama.cpp gives the same regexes: "starcoder", "refact", "command-r", "codeshell",
/// "exaone", "minerva-7b"), "gpt-2"/"gpt2" (and "phi-2", "mpt", "olmo", "jais"), and
/// "llama-bpe"/"llama3"/"llama-v3"/"falcon3"/"pixtral"/"dbrx"/"smaug-bpe".
package final class Tokenizer: @unchecked Sendable {
    /// Token types as stored in `tokenizer.ggml.token_type`.
    package enum TokenType: Int32, Sendable {
        case undefined = 0
        case normal = 1
        case unknown = 2
        case control = 3
        case userDefined = 4
        case unused = 5
        case byte = 6
    }

    /// Token attribute bits (llama.cpp's llama_token_attr), derived from the types.
    struct Attr: OptionSet {
        let rawValue: UInt32
        static let unknown = Attr(rawValue: 1 << 0)
        static let unused = Attr(rawValue: 1 << 1)
        static let normal = Attr(rawValue: 1 << 2)
        static let control = Attr(rawValue: 1 << 3)
        static let userDefined = Attr(rawValue: 1 << 4)
        static let byte = Attr(rawValue: 1 << 5)
    }

    /// Token texts as stored (byte-level encoded for normal tokens).
    package let tokens: [String]
    package let tokenTypes: [TokenType]
    /// Merges as stored ("left right"); rank = index.
    package let mergeCount: Int
    package let model: String
    package let pre: String
    package let preTokenizer: PreTokenizerKind

    package let bos: Int32?
    package let eos: Int32?
    package let eot: Int32?
    package let unk: Int32?
    package let pad: Int32?
    /// Tokens that end generation (eos, eot, and llama.cpp's by-name list).
    package let endOfGeneration: Set<Int32>
    package let addBOS: Bool
    package let addEOS: Bool
    /// `tokenizer.ggml.add_space_prefix` (only affects detokenization for BPE).
    package let addSpacePrefix: Bool
    /// Whether detokenization applies llama.cpp's clean-up of spaces before punctuation.
    package let cleanSpaces: Bool
    /// Words found whole in the vocabulary skip the merges (llama-bpe).
    package let ignoreMerges: Bool
    package let chatTemplate: String?

    package var vocabularySize: Int { tokens.count }

    let attrs: [Attr]
    /// Bytes of each token as llama_token_to_piece(special: true) gives them.
    let pieces: [[UInt8]]
    let merges: MergeTable
    /// Token id of each single byte (-1 when its encoded character is not a token).
    let byteTokens: [Int32]
    /// Token id by stored text bytes.
    let textToID: [[UInt8]: Int32]
    /// Control / user-defined / unknown tokens, longest text first.
    let specialOrder: [Int32]
    let specialBytes: [[UInt8]]
    let pretokenizer: PreTokenizer

    package convenience init(gguf: GGUFFile) throws {
        func str(_ k: String) -> String? { gguf.value(k)?.stringValue }
        guard let model = str("tokenizer.ggml.model") else {
            throw BatchCoreError.format("tokenizer: no tokenizer.ggml.model")
        }
        let tokens: [String]
        do { tokens = try gguf.stringArray("tokenizer.ggml.tokens") } catch {
            throw BatchCoreError.format("tokenizer: tokenizer.ggml.tokens: \(error)")
        }
        var types: [Int]? = nil
        if gguf.value("tokenizer.ggml.token_type") != nil {
            do { types = try gguf.intArray("tokenizer.ggml.token_type") } catch {
                throw BatchCoreError.format("tokenizer: tokenizer.ggml.token_type: \(error)")
            }
        }
        guard let mergesValue = gguf.value("tokenizer.ggml.merges") else {
            throw BatchCoreError.format("tokenizer: no tokenizer.ggml.merges")
        }
        guard let merges = mergesValue.arrayValue?.stringValues else {
            throw BatchCoreError.format("tokenizer: tokenizer.ggml.merges is not an array of strings")
        }
        var ids: [String: Int32?] = [:]
        for key in ["bos", "eos", "eot", "eom", "unknown", "seperator", "padding"] {
            let k = "tokenizer.ggml.\(key)_token_id"
            guard let v = gguf.value(k) else { continue }
            guard let u = v.uintValue else { throw BatchCoreError.format("tokenizer: \(k) is not an integer") }
            ids[key] = u < UInt64(tokens.count) ? Int32(u) : Optional<Int32>.none
        }
        try self.init(model: model, pre: str("tokenizer.ggml.pre") ?? "", tokens: tokens, types: types,
                      merges: merges, ids: ids,
                      addBOS: gguf.value("tokenizer.ggml.add_bos_token")?.boolValue,
                      addEOS: gguf.value("tokenizer.ggml.add_eos_token")?.boolValue,
                      addSpacePrefix: gguf.value("tokenizer.ggml.add_space_prefix")?.boolValue ?? false,
                      chatTemplate: str("tokenizer.chat_template"))
    }

    /// Builds a tokenizer from vocabulary data (what `init(gguf:)` reads).
    /// `ids` maps "bos", "eos", "eot", "eom", "unknown", "seperator", "padding" to the
    /// id from the file (nil: present but out of range, so the default is kept).
    init(model: String, pre: String, tokens rawTokens: [String], types: [Int]?, merges mergeStrings: [String],
         ids: [String: Int32?], addBOS addBOSKey: Bool?, addEOS addEOSKey: Bool?, addSpacePrefix: Bool,
         chatTemplate: String?) throws {
        guard model == "gpt2" else {
            throw BatchCoreError(.unsupported, "tokenizer: model '\(model)' is not supported (only gpt2 byte-level BPE)")
        }
        let n = rawTokens.count
        guard n > 0, n < Int(Int32.max) else { throw BatchCoreError.format("tokenizer: vocabulary has \(n) tokens") }
        if let types, types.count < n {
            throw BatchCoreError.format("tokenizer: token_type has \(types.count) entries for \(n) tokens")
        }

        // Pre-tokenizer and per-type defaults, as llama.cpp's vocab loader sets them.
        var kind: PreTokenizerKind
        var clean = true
        var ignore = false
        var addBOS = false
        switch pre {
        case "smollm", "command-r":
            kind = .digitsThenGPT2
            clean = false
        case "starcoder", "refact", "codeshell", "exaone", "minerva-7b":
            kind = .digitsThenGPT2
        case "gpt-2", "gpt2", "phi-2", "mpt", "olmo", "jais":
            kind = .gpt2
        case "llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral":
            kind = .llama3
            ignore = true
            addBOS = true
        case "dbrx", "smaug-bpe":
            kind = .llama3
        default:
            throw BatchCoreError(.unsupported, "tokenizer: pre-tokenizer '\(pre)' is not supported")
        }

        // Vocabulary.
        var tokens = rawTokens
        var tokenTypes = [TokenType](repeating: .normal, count: n)
        var attrs = [Attr](repeating: .normal, count: n)
        var textToID: [[UInt8]: Int32] = [:]
        textToID.reserveCapacity(n)
        for i in 0..<n {
            if tokens[i].isEmpty { tokens[i] = "[EMPTY_\(i)]" }
            let bytes = Array(tokens[i].utf8)
            if let other = textToID.updateValue(Int32(i), forKey: bytes) {
                throw BatchCoreError.format("tokenizer: duplicate token '\(tokens[i])' has ids \(other) and \(i)")
            }
            if let types {
                let t = TokenType(rawValue: Int32(truncatingIfNeeded: types[i])) ?? .undefined
                tokenTypes[i] = t
                switch t {
                case .normal: attrs[i] = .normal
                case .unknown: attrs[i] = .unknown
                case .control: attrs[i] = .control
                case .userDefined: attrs[i] = .userDefined
                case .unused: attrs[i] = .unused
                case .byte: attrs[i] = .byte
                case .undefined: attrs[i] = []
                }
            }
        }

        // Special ids: defaults for BPE (bos = eos = 11 when in range), then the file.
        func special(_ key: String, _ fallback: Int32?) -> Int32? {
            var id = fallback
            if let f = id, Int(f) >= n { id = nil }
            if let entry = ids[key], let v = entry { id = v }
            return id
        }
        let bos = special("bos", 11)
        let eos = special("eos", 11)
        var eot = special("eot", nil)
        var eom = special("eom", nil)
        let unk = special("unknown", nil)
        let pad = special("padding", nil)

        // Auto-detection by text, as llama.cpp does (marks them control).
        func find(_ names: [String]) -> Int32? {
            for name in names { if let id = textToID[Array(name.utf8)] { return id } }
            return nil
        }
        func markControl(_ id: Int32) { attrs[Int(id)].insert(.control) }
        // llama.cpp takes the first match in hash-map order; the lowest id is used here
        // (for SmolLM2 both give <|endoftext|>).
        if eot == nil, let id = Self.eotNames.compactMap({ textToID[Array($0.utf8)] }).min() {
            eot = id
            markControl(id)
        }
        if eom == nil, let id = find(["<|eom_id|>"]) { eom = id; markControl(id) }
        for names in Self.fimNames { if let id = find(names) { markControl(id) } }
        var eog = Set<Int32>()
        for name in Self.eogNames {
            if let id = textToID[Array(name.utf8)] { eog.insert(id); markControl(id) }
        }
        for name in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let id = textToID[Array(name.utf8)] { attrs[Int(id)] = .userDefined }
        }
        if let eos { eog.insert(eos) }
        if let eot { eog.insert(eot) }
        if let eom { eog.insert(eom) }

        // Merges.
        var table = MergeTable(capacityFor: mergeStrings.count)
        for (rank, m) in mergeStrings.enumerated() {
            let u = Array(m.utf8)
            // Split at the first space after the first byte (a merge side may be " ").
            guard u.count >= 3, let sp = u[1...].firstIndex(of: 0x20) else {
                throw BatchCoreError.format("tokenizer: malformed merge \(rank): '\(m)'")
            }
            let left = Array(u[..<sp]), right = Array(u[(sp + 1)...])
            guard let l = textToID[left], let r = textToID[right], let merged = textToID[left + right] else {
                continue  // cannot occur between tokens of this vocabulary
            }
            table.insert(left: l, right: r, rank: Int32(rank), merged: merged)
        }

        var byteTokens = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            var enc: [UInt8] = []
            ByteLevel.appendUTF8(ByteLevel.byteToScalar[b], to: &enc)
            byteTokens[b] = textToID[enc] ?? -1
        }

        // Pieces (llama_token_to_piece with special = true).
        var pieces = [[UInt8]](repeating: [], count: n)
        for i in 0..<n {
            let a = attrs[i]
            if !a.intersection([.unknown, .control, .userDefined]).isEmpty {
                pieces[i] = Array(tokens[i].utf8)
            } else if a.contains(.normal) {
                pieces[i] = Self.byteDecode(tokens[i])
            } else if a.contains(.byte) {
                pieces[i] = Self.hexByte(tokens[i]).map { [$0] } ?? []
            }
        }

        var specials: [Int32] = []
        for i in 0..<n where !attrs[i].intersection([.control, .userDefined, .unknown]).isEmpty {
            specials.append(Int32(i))
        }
        specials.sort { a, b in
            let la = tokens[Int(a)].utf8.count, lb = tokens[Int(b)].utf8.count
            return la != lb ? la > lb : a < b
        }

        self.tokens = tokens
        self.tokenTypes = tokenTypes
        self.mergeCount = mergeStrings.count
        self.model = model
        self.pre = pre
        self.preTokenizer = kind
        self.bos = bos
        self.eos = eos
        self.eot = eot
        self.unk = unk
        self.pad = pad
        self.endOfGeneration = eog
        self.addBOS = addBOSKey ?? addBOS
        self.addEOS = addEOSKey ?? false
        if self.addBOS && bos == nil { throw BatchCoreError.format("tokenizer: add_bos_token is true but there is no bos token") }
        if self.addEOS && eos == nil { throw BatchCoreError.format("tokenizer: add_eos_token is true but there is no eos token") }
        self.addSpacePrefix = addSpacePrefix
        self.cleanSpaces = clean
        self.ignoreMerges = ignore
        self.chatTemplate = chatTemplate
        self.attrs = attrs
        self.pieces = pieces
        self.merges = table
        self.byteTokens = byteTokens
        self.textToID = textToID
        self.specialOrder = specials
        self.specialBytes = specials.map { Array(tokens[Int($0)].utf8) }
        self.pretokenizer = PreTokenizer(kind: kind)
    }

    static let eotNames = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
                           "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"]
    static let fimNames: [[String]] = [
        ["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"],
        ["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"],
        ["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"],
        ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
        ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"],
        ["<|file_sep|>"],
    ]
    static let eogNames = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
                           "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
                           "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
                           "<｜end▁of▁sentence｜>", "[e~["]

    /// Byte-level decoding of a normal token's text; characters that show no byte
    /// come out as llama.cpp writes them ("[UNK_BYTE_0x<hex>" + text + "]").
    static func byteDecode(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        for s in text.unicodeScalars {
            if let b = ByteLevel.byte(forScalar: s.value) {
                out.append(b)
            } else {
                out.append(contentsOf: Array("[UNK_BYTE_0x".utf8))
                var u: [UInt8] = []
                ByteLevel.appendUTF8(s.value, to: &u)
                for c in u {
                    let hex = Array("0123456789abcdef".utf8)
                    out.append(hex[Int(c >> 4)])
                    out.append(hex[Int(c & 15)])
                }
                out.append(contentsOf: Array(text.utf8))
                out.append(UInt8(ascii: "]"))
            }
        }
        return out
    }

    /// The byte of a "<0xXX>" token.
    static func hexByte(_ text: String) -> UInt8? {
        let u = Array(text.utf8)
        guard u.count >= 5 else { return nil }
        return UInt8(String(decoding: u[3..<5], as: UTF8.self), radix: 16)
    }

    // MARK: Queries

    package func tokenType(_ id: Int32) throws -> TokenType {
        try check(id)
        return tokenTypes[Int(id)]
    }

    /// Whether `id` is a control token (including those llama.cpp marks by name).
    package func isControl(_ id: Int32) -> Bool {
        id >= 0 && Int(id) < attrs.count && attrs[Int(id)].contains(.control)
    }

    package func isEndOfGeneration(_ id: Int32) -> Bool { endOfGeneration.contains(id) }

    /// The id of a token by its stored text.
    package func tokenID(_ text: String) -> Int32? { textToID[Array(text.utf8)] }

    @inline(__always)
    func check(_ id: Int32) throws {
        guard id >= 0 && Int(id) < tokens.count else {
            throw BatchCoreError.invalid("token id \(id) is out of range 0..<\(tokens.count)")
        }
    }

    // MARK: Encoding

    /// Token ids of `text`, as llama.cpp's `llama_tokenize(vocab, text, add_special,
    /// parse_special)`: with `parseSpecial`, texts of control tokens (e.g.
    /// "<|im_start|>") become those tokens; user-defined tokens always do. With
    /// `addSpecial`, bos/eos are added as the model's add_bos/add_eos flags say.
    package func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [Int32] {
        var text = text
        return text.withUTF8 { encode(bytes: $0, addSpecial: addSpecial, parseSpecial: parseSpecial) }
    }

    /// `encode` of UTF-8 bytes. Invalid UTF-8 is read as llama.cpp reads it: each byte
    /// that starts no (loosely checked) sequence stands for U+FFFD.
    package func encode(bytes: UnsafeBufferPointer<UInt8>, addSpecial: Bool, parseSpecial: Bool) -> [Int32] {
        var out: [Int32] = []
        out.reserveCapacity(bytes.count / 3 + 4)
        if addSpecial && addBOS, let bos { out.append(bos) }
        var scratch = BPEScratch()
        if bytes.count > 0 {
            for fragment in partition(bytes, parseSpecial: parseSpecial) {
                switch fragment {
                case .token(let id):
                    out.append(id)
                case .text(let lo, let hi):
                    encodeText(UnsafeBufferPointer(rebasing: bytes[lo..<hi]), &scratch, &out)
                }
            }
        }
        if addSpecial && addEOS, let eos { out.append(eos) }
        return out
    }

    enum Fragment {
        case text(Int, Int)
        case token(Int32)
    }

    /// Splits out special-token texts, longest tokens first (tokenizer_st_partition).
    func partition(_ bytes: UnsafeBufferPointer<UInt8>, parseSpecial: Bool) -> [Fragment] {
        var frags: [Fragment] = [.text(0, bytes.count)]
        for (k, id) in specialOrder.enumerated() {
            let a = attrs[Int(id)]
            if !parseSpecial && !a.intersection([.control, .unknown]).isEmpty { continue }
            let pat = specialBytes[k]
            guard let first = pat.first else { continue }
            var next: [Fragment] = []
            var changed = false
            for f in frags {
                guard case .text(let lo, let hi) = f else { next.append(f); continue }
                var start = lo
                var i = lo
                let m = pat.count
                while i + m <= hi {
                    // find the first byte, then compare the rest
                    guard let p = memchr(bytes.baseAddress! + i, Int32(first), hi - m + 1 - i) else { break }
                    let at = UnsafeRawPointer(bytes.baseAddress!).distance(to: UnsafeRawPointer(p))
                    if memcmp(bytes.baseAddress! + at, pat, m) == 0 {
                        if at > start { next.append(.text(start, at)) }
                        next.append(.token(id))
                        changed = true
                        start = at + m
                        i = start
                    } else {
                        i = at + 1
                    }
                }
                if start < hi { next.append(.text(start, hi)) }
            }
            if changed { frags = next }
        }
        return frags
    }

    /// BPE of one raw-text fragment.
    func encodeText(_ bytes: UnsafeBufferPointer<UInt8>, _ scratch: inout BPEScratch, _ out: inout [Int32]) {
        let scalars = PreTokenizer.Scalars(bytes)
        guard scalars.canonical else {
            // Invalid UTF-8 (only via encode(bytes:)): tokenize what llama.cpp decodes.
            let fixed = scalars.reencoded()
            fixed.withUnsafeBufferPointer { encodeText($0, &scratch, &out) }
            return
        }
        let ends = pretokenizer.split(scalars)
        var wordStart = 0
        for e in ends {
            let lo = Int(scalars.starts[wordStart]), hi = Int(scalars.starts[Int(e)])
            wordStart = Int(e)
            let word = UnsafeBufferPointer(rebasing: bytes[lo..<hi])
            if ignoreMerges, let id = textToID[ByteLevel.encode(word)] {
                out.append(id)
                continue
            }
            scratch.ids.removeAll(keepingCapacity: true)
            for b in word { scratch.ids.append(byteTokens[Int(b)]) }
            scratch.merge(merges, into: &out)
        }
    }

    // MARK: Decoding

    /// Bytes of token `id` (llama_token_to_piece with lstrip 0). Control and unknown
    /// tokens give their text only when `special`.
    package func piece(_ token: Int32, special: Bool) throws -> [UInt8] {
        try check(token)
        if !special && !attrs[Int(token)].intersection([.control, .unknown]).isEmpty { return [] }
        return pieces[Int(token)]
    }

    /// Bytes of `tokens` (llama_detokenize with remove_special = false and
    /// unparse_special = `special`), including its clean-up of spaces where the
    /// pre-tokenizer type asks for it.
    package func decode(_ tokens: [Int32], special: Bool) throws -> [UInt8] {
        var out: [UInt8] = []
        var stripSpace = addSpacePrefix
        for t in tokens {
            var p = try piece(t, special: special)
            if stripSpace, p.first == 0x20 { p.removeFirst() }
            stripSpace = false
            out.append(contentsOf: p)
        }
        if cleanSpaces { Self.cleanUpSpaces(&out) }
        return out
    }

    /// `decode` as a String (invalid UTF-8 replaced by U+FFFD).
    package func decodeString(_ tokens: [Int32], special: Bool) throws -> String {
        String(decoding: try decode(tokens, special: special), as: UTF8.self)
    }

    /// llama.cpp's three clean-up passes: drop the space in " ?", " !", " .", " ,";
    /// turn " ' " into "'"; drop the space before "'s", "'m", "'re", "'ve".
    static func cleanUpSpaces(_ t: inout [UInt8]) {
        let space = UInt8(ascii: " "), quote = UInt8(ascii: "'")
        // pass 1
        var total = t.isEmpty ? 0 : 1
        var n = t.count
        var i = 1
        while i < n {
            let x = t[i]
            if t[i - 1] == space && (x == UInt8(ascii: "?") || x == UInt8(ascii: "!") || x == UInt8(ascii: ".") || x == UInt8(ascii: ",")) {
                total -= 1
            }
            t[total] = x
            total += 1
            i += 1
        }
        n = total
        // pass 2
        total = n > 0 ? 1 : 0
        i = 1
        while i < n {
            let x = t[i]
            if x == quote && i + 1 < n && t[i - 1] == space && t[i + 1] == space {
                total -= 1
                i += 1
                t[i] = 0
            }
            t[total] = x
            total += 1
            i += 1
        }
        n = total
        // pass 3
        total = n > 0 ? 1 : 0
        i = 1
        while i < n {
            let x = t[i]
            if t[i - 1] == space && x == quote && i + 1 < n {
                let x1 = t[i + 1]
                if x1 == UInt8(ascii: "s") || x1 == UInt8(ascii: "m") {
                    total -= 1
                } else if x1 != UInt8(ascii: "t") && x1 != UInt8(ascii: "d") && i + 2 < n {
                    let x2 = t[i + 2]
                    if (x1 == UInt8(ascii: "r") && x2 == UInt8(ascii: "e")) || (x1 == UInt8(ascii: "v") && x2 == UInt8(ascii: "e")) {
                        total -= 1
                    }
                }
            }
            t[total] = x
            total += 1
            i += 1
        }
        t.removeSubrange(total...)
    }
}
