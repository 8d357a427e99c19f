import BCCore
import BCFormats
import BCTokenizer
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Fixtures

enum TokenizerFixtures {
    static let modelPath: String = {
        let home = ProcessInfo.processInfo.environment["HOME"] ?? "/root"
        return home + "/.cache/batchcore/SmolLM2-135M-Instruct.Q4_1.gguf"
    }()
    static let tokensPath = Repo.path("Tests/fixtures/llama/tokenizer_tokens.json")

    static var haveModel: Bool { FileManager.default.fileExists(atPath: modelPath) }
    static var haveReference: Bool { haveModel && FileManager.default.fileExists(atPath: tokensPath) }

    /// Loaded once for all tests.
    static let tokenizer: Tokenizer? = {
        guard haveModel, let g = try? GGUFFile(path: modelPath) else { return nil }
        return try? Tokenizer(gguf: g)
    }()

    /// Read-only after its one initialisation (JSONSerialization's `Any` is not Sendable).
    nonisolated(unsafe) static let reference: [String: Any]? = {
        guard let data = FileManager.default.contents(atPath: tokensPath) else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }()

    static func ids(_ any: Any?) -> [Int32]? {
        (any as? [Any])?.compactMap { ($0 as? NSNumber).map { Int32($0.intValue) } }
    }

    static func b64(_ any: Any?) -> [UInt8]? {
        guard let s = any as? String, let d = Data(base64Encoded: s) else { return nil }
        return [UInt8](d)
    }
}

private func tok() throws -> Tokenizer { try #require(TokenizerFixtures.tokenizer) }

/// First index where two id lists differ, with a short context, for reports.
private func diffSummary(_ got: [Int32], _ want: [Int32]) -> String {
    var k = 0
    while k < min(got.count, want.count) && got[k] == want[k] { k += 1 }
    let g = got[max(0, k - 2)..<min(got.count, k + 4)], w = want[max(0, k - 2)..<min(want.count, k + 4)]
    return "at token \(k): got \(Array(g)) want \(Array(w)) (lengths \(got.count) vs \(want.count))"
}

// MARK: - Against llama.cpp

@Suite("Tokenizer vs llama.cpp (SmolLM2)", .enabled(if: TokenizerFixtures.haveReference))
struct TokenizerReferenceTests {
    @Test func metadata() throws {
        let t = try tok()
        #expect(t.vocabularySize == 49152)
        #expect(t.mergeCount == 48900)
        #expect(t.pre == "smollm")
        #expect(t.preTokenizer == .digitsThenGPT2)
        #expect(t.bos == 1)
        #expect(t.eos == 2)
        #expect(t.eot == 0)  // llama.cpp's auto-detected EOT for this model
        #expect(t.unk == 0)
        #expect(t.pad == 2)
        #expect(t.addBOS == false)
        #expect(t.addEOS == false)
        #expect(t.isEndOfGeneration(2) && t.isEndOfGeneration(0))
        #expect(try t.tokenType(1) == .control)
        #expect(try t.tokenType(100) == .normal)
        #expect(t.chatTemplate?.contains("<|im_start|>") == true)
    }

    /// Every corpus line, parse_special = false (and = true where given), as llama.cpp.
    @Test func everyCorpusLineMatches() throws {
        let t = try tok()
        let ref = try #require(TokenizerFixtures.reference)
        let lines = try #require(ref["lines"] as? [[String: Any]])
        #expect(lines.count >= 2000)
        var mismatches: [String] = []
        var specialChecked = 0
        var bytes = 0
        for line in lines {
            let text = try #require(line["text"] as? String)
            let want = try #require(TokenizerFixtures.ids(line["ids"]))
            bytes += text.utf8.count
            let got = t.encode(text, addSpecial: false, parseSpecial: false)
            if got != want { mismatches.append("line \(line["i"] ?? "?") \(text.debugDescription.prefix(80)): \(diffSummary(got, want))") }
            if let wantS = TokenizerFixtures.ids(line["ids_special"]) {
                specialChecked += 1
                let gotS = t.encode(text, addSpecial: false, parseSpecial: true)
                if gotS != wantS { mismatches.append("line \(line["i"] ?? "?") [special] \(text.debugDescription.prefix(80)): \(diffSummary(gotS, wantS))") }
            }
        }
        print("tokenizer corpus: \(lines.count) lines (\(bytes) bytes), \(specialChecked) parse_special lines, \(mismatches.count) mismatches")
        for m in mismatches.prefix(10) { print("  " + m) }
        #expect(mismatches.isEmpty, "\(mismatches.count) mismatching lines; first: \(mismatches.prefix(5))")
        #expect(specialChecked > 0)
    }

    /// The same lines joined by newlines (the .txt corpus), and multi-line documents.
    @Test func documentsMatch() throws {
        let t = try tok()
        let ref = try #require(TokenizerFixtures.reference)
        let docs = try #require(ref["documents"] as? [[String: Any]])
        #expect(!docs.isEmpty)
        for doc in docs {
            let name = doc["name"] as? String ?? "?"
            let text = try #require(doc["text"] as? String)
            let want = try #require(TokenizerFixtures.ids(doc["ids"]))
            let got = t.encode(text, addSpecial: false, parseSpecial: false)
            #expect(got == want, "\(name): \(diffSummary(got, want))")
            if let wantS = TokenizerFixtures.ids(doc["ids_special"]) {
                let gotS = t.encode(text, addSpecial: false, parseSpecial: true)
                #expect(gotS == wantS, "\(name) [special]: \(diffSummary(gotS, wantS))")
                if let st = TokenizerFixtures.b64(doc["detok_special_true_b64"]) {
                    #expect(try t.decode(wantS, special: true) == st, "\(name) detok special=true")
                }
                if let sf = TokenizerFixtures.b64(doc["detok_special_false_b64"]) {
                    #expect(try t.decode(wantS, special: false) == sf, "\(name) detok special=false")
                }
            }
            if let d = TokenizerFixtures.b64(doc["detok_b64"]) {
                #expect(try t.decode(want, special: false) == d, "\(name) detok")
            }
        }
    }

    @Test func detokenizationSamples() throws {
        let t = try tok()
        let ref = try #require(TokenizerFixtures.reference)
        let det = try #require(ref["detokenize"] as? [String: Any])
        let samples = try #require(det["samples"] as? [[String: Any]])
        #expect(!samples.isEmpty)
        var bad = 0
        for s in samples {
            let ids = try #require(TokenizerFixtures.ids(s["ids"]))
            let want = try #require(TokenizerFixtures.b64(s["bytes_b64"]))
            if try t.decode(ids, special: false) != want { bad += 1 }
            if let idsS = TokenizerFixtures.ids(s["ids_special"]) {
                if let w = TokenizerFixtures.b64(s["special_true_b64"]), try t.decode(idsS, special: true) != w { bad += 1 }
                if let w = TokenizerFixtures.b64(s["special_false_b64"]), try t.decode(idsS, special: false) != w { bad += 1 }
            }
        }
        #expect(bad == 0, "\(bad) detokenization mismatches of \(samples.count) samples")
    }

    /// Encoding speed on the corpus (reported; must exceed 1 MB/s).
    @Test func encodeSpeed() throws {
        let t = try tok()
        let ref = try #require(TokenizerFixtures.reference)
        let lines = try #require(ref["lines"] as? [[String: Any]])
        let texts = lines.compactMap { $0["text"] as? String }
        let doc = texts.joined(separator: "\n")
        let bytes = texts.reduce(0) { $0 + $1.utf8.count }
        var best = Double.infinity
        var count = 0
        for _ in 0..<5 {
            let t0 = DispatchTime.now().uptimeNanoseconds
            for s in texts { count &+= t.encode(s, addSpecial: false, parseSpecial: false).count }
            let t1 = DispatchTime.now().uptimeNanoseconds
            best = min(best, Double(t1 - t0) / 1e9)
        }
        var bestDoc = Double.infinity
        for _ in 0..<5 {
            let t0 = DispatchTime.now().uptimeNanoseconds
            count &+= t.encode(doc, addSpecial: false, parseSpecial: true).count
            let t1 = DispatchTime.now().uptimeNanoseconds
            bestDoc = min(bestDoc, Double(t1 - t0) / 1e9)
        }
        let mbps = Double(bytes) / best / 1e6
        let mbpsDoc = Double(doc.utf8.count) / bestDoc / 1e6
        print(String(format: "tokenizer encode: %.2f MB/s per line, %.2f MB/s as one document (%d bytes)", mbps, mbpsDoc, bytes))
        #expect(count > 0)
        #expect(mbps > 1.0)
        #expect(mbpsDoc > 1.0)
    }
}

// MARK: - Properties of the real vocabulary

@Suite("Tokenizer (SmolLM2)", .enabled(if: TokenizerFixtures.haveModel))
struct TokenizerModelTests {
    /// Ids checked by hand in the vocabulary: "Hello" is one token; " world" is the
    /// token "Ġworld"; digits are always split one per token.
    @Test func knownIDs() throws {
        let t = try tok()
        #expect(t.encode("Hello", addSpecial: false, parseSpecial: false) == [19556])
        #expect(t.encode("Hello", addSpecial: true, parseSpecial: false) == [19556])  // no BOS for SmolLM2
        let world = try #require(t.tokenID("Ġworld"))
        let hello = try #require(t.tokenID("Hello"))
        let comma = try #require(t.tokenID(","))
        #expect(t.encode("Hello, world", addSpecial: false, parseSpecial: false) == [hello, comma, world])
        let digits = t.encode("12345", addSpecial: false, parseSpecial: false)
        #expect(digits == "12345".map { t.tokenID(String($0))! })
        let spaced = t.encode(" 42", addSpecial: false, parseSpecial: false)
        #expect(spaced == [t.tokenID("Ġ")!, t.tokenID("4")!, t.tokenID("2")!])
        #expect(t.encode("", addSpecial: false, parseSpecial: false) == [])
        #expect(t.encode("\n", addSpecial: false, parseSpecial: false) == [t.tokenID("Ċ")!])
    }

    @Test func roundTripArbitraryText() throws {
        let t = try tok()
        let fixed = [
            "", " ", "  ", "\n\n\n", "\t \t", "a  b   c    ", "héllo wörld", "日本語のテキスト", "中文测试，标点。",
            "😀👍🏽🇫🇷 family: 👨‍👩‍👧‍👦", "Ελληνικά και кириллица", "مرحبا بالعالم", "x\u{0301}\u{0302}", "\u{FEFF}bom",
            "\u{0000}nul\u{0001}", "tab\tsep\r\nCRLF", "it's we're they'll I'd you've I'm", "ＦＵＬＬＷＩＤＴＨ １２３",
            "١٢٣ ٤٥٦ ⅷ ²³ ½", "<|im_start|> not parsed", "\u{00A0}nbsp\u{2003}emsp\u{3000}ideo", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
        ]
        for s in fixed {
            let ids = t.encode(s, addSpecial: false, parseSpecial: false)
            #expect(try t.decode(ids, special: false) == Array(s.utf8), "round trip of \(s.debugDescription)")
        }
        var g = SplitMix64(state: 7)
        let pool: [Unicode.Scalar] = Array("abcXYZ019 \n\t.,'!?-_/\\\"".unicodeScalars)
            + ["é", "ß", "日", "本", "😀", "🏽", "\u{200D}", "\u{0301}", "\u{00A0}", "\u{3000}", "١", "²", "Ω", "ж", "\u{FFFD}", "\u{10FFFD}"]
        for _ in 0..<300 {
            var s = String.UnicodeScalarView()
            for _ in 0..<Int(g.next() % 40) { s.append(pool[Int(g.next() % UInt64(pool.count))]) }
            let text = String(s)
            let ids = t.encode(text, addSpecial: false, parseSpecial: false)
            #expect(try t.decode(ids, special: false) == Array(text.utf8), "round trip of \(text.debugDescription)")
        }
    }

    /// Raw bytes that are not UTF-8: llama.cpp reads each bad byte as U+FFFD.
    @Test func invalidUTF8Bytes() throws {
        let t = try tok()
        let raw: [UInt8] = [0x61, 0xFF, 0x62, 0x20, 0xC0, 0x80, 0x31, 0xE6, 0x97]
        let got = raw.withUnsafeBufferPointer { t.encode(bytes: $0, addSpecial: false, parseSpecial: false) }
        #expect(got == t.encode("a\u{FFFD}b \u{0}1\u{FFFD}\u{FFFD}", addSpecial: false, parseSpecial: false))
        let valid = "ok é 😀"
        let viaBytes = Array(valid.utf8).withUnsafeBufferPointer { t.encode(bytes: $0, addSpecial: false, parseSpecial: false) }
        #expect(viaBytes == t.encode(valid, addSpecial: false, parseSpecial: false))
    }

    @Test func loadTime() throws {
        let t0 = DispatchTime.now().uptimeNanoseconds
        let g = try GGUFFile(path: TokenizerFixtures.modelPath)
        let t1 = DispatchTime.now().uptimeNanoseconds
        let t = try Tokenizer(gguf: g)
        let t2 = DispatchTime.now().uptimeNanoseconds
        print(String(format: "tokenizer load: GGUF open %.1f ms, tokenizer build %.1f ms", Double(t1 - t0) / 1e6, Double(t2 - t1) / 1e6))
        #expect(t.vocabularySize == 49152)
    }

    @Test func specialTokenParsing() throws {
        let t = try tok()
        let start = try #require(t.tokenID("<|im_start|>"))
        let end = try #require(t.tokenID("<|im_end|>"))
        #expect(start == 1 && end == 2)
        let text = "<|im_start|>user\nHi<|im_end|>"
        let parsed = t.encode(text, addSpecial: false, parseSpecial: true)
        #expect(parsed.first == start && parsed.last == end)
        #expect(Array(parsed[1..<(parsed.count - 1)]) == t.encode("user\nHi", addSpecial: false, parseSpecial: false))
        // Not parsed: the text is tokenized as ordinary characters.
        let plain = t.encode(text, addSpecial: false, parseSpecial: false)
        #expect(!plain.contains(start) && !plain.contains(end))
        #expect(try t.decode(plain, special: false) == Array(text.utf8))
        // Adjacent, repeated and partial special texts.
        #expect(t.encode("<|im_end|><|im_end|>", addSpecial: false, parseSpecial: true) == [end, end])
        #expect(t.encode("<|im_end|", addSpecial: false, parseSpecial: true)
            == t.encode("<|im_end|", addSpecial: false, parseSpecial: false))
        // Pieces: control tokens render only with special = true.
        #expect(try t.piece(start, special: false) == [])
        #expect(try t.piece(start, special: true) == Array("<|im_start|>".utf8))
        #expect(try t.decode(parsed, special: true) == Array(text.utf8))
        #expect(try t.decode(parsed, special: false) == Array("user\nHi".utf8))
    }

    @Test func outOfRangeIDs() throws {
        let t = try tok()
        for bad: Int32 in [-1, 49152, Int32.max] {
            #expect(throws: BatchCoreError.self) { try t.piece(bad, special: true) }
            do {
                _ = try t.decode([5, bad], special: false)
                Issue.record("no error for \(bad)")
            } catch let e as BatchCoreError {
                #expect(e.kind == .invalidArgument)
            }
        }
        var d = StreamingDecoder(tokenizer: t)
        #expect(throws: BatchCoreError.self) { try d.push(-5) }
    }

    @Test func chatTemplate() throws {
        let t = try tok()
        let sys = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        // SmolLM2's template adds its default system turn when the first message is not a system message.
        let p1 = try t.applyChatML(messages: [(role: "user", content: "Hi!")], addGenerationPrompt: true)
        #expect(p1 == sys + "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")
        let p2 = try t.applyChatML(messages: [(role: "system", content: "Be brief."), (role: "user", content: "Hi")],
                                   addGenerationPrompt: false)
        #expect(p2 == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
        let p3 = try t.applyChatML(messages: [(role: "user", content: "a"), (role: "assistant", content: "b")],
                                   addGenerationPrompt: false)
        #expect(p3 == sys + "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\nb<|im_end|>\n")
        #expect(try t.applyChatML(messages: [], addGenerationPrompt: true) == "<|im_start|>assistant\n")
        // The prompt tokenizes with the control tokens when parsed.
        let ids = t.encode(p1, addSpecial: true, parseSpecial: true)
        #expect(ids.first == 1)
        #expect(ids.filter { $0 == 1 }.count == 3 && ids.filter { $0 == 2 }.count == 2)
    }

    /// Tokens streamed one at a time give the full text, and never half a character.
    @Test func streamingDecoder() throws {
        let t = try tok()
        let text = "Emoji 😀👍🏽 and CJK 日本語, accents é, and 𝔘 math — done."
        let ids = t.encode(text, addSpecial: false, parseSpecial: false)
        var d = StreamingDecoder(tokenizer: t)
        var out = ""
        for id in ids {
            let s = try d.push(id)
            #expect(!s.unicodeScalars.contains("\u{FFFD}"))
            out += s
        }
        out += d.finish()
        #expect(out == text)
    }
}

// MARK: - Streaming decoder on raw bytes (no model needed)

@Suite("StreamingDecoder bytes")
struct StreamingDecoderByteTests {
    /// Complete UTF-8 prefix logic, checked on random splits of multi-byte text.
    @Test func randomSplits() throws {
        let text = "aé日😀🏽\u{10FFFD}ß€ — x"
        let bytes = Array(text.utf8)
        var g = SplitMix64(state: 11)
        for _ in 0..<500 {
            var parts: [[UInt8]] = []
            var i = 0
            while i < bytes.count {
                let n = 1 + Int(g.next() % 4)
                parts.append(Array(bytes[i..<min(bytes.count, i + n)]))
                i += n
            }
            var d = StreamingDecoder.Bytes()
            var out = ""
            for p in parts {
                let s = d.push(p)
                #expect(!s.unicodeScalars.contains("\u{FFFD}"))
                out += s
            }
            #expect(d.finish() == "")
            #expect(out == text)
        }
    }

    @Test func invalidAndIncompleteBytes() {
        var d = StreamingDecoder.Bytes()
        #expect(d.push([0xE6, 0x97]) == "")  // start of 日
        #expect(d.push([0xA5]) == "日")
        #expect(d.push([0x80]) == "\u{FFFD}")  // lone continuation byte
        #expect(d.push([0xE0, 0x80]) == "\u{FFFD}\u{FFFD}")  // cannot start a character
        #expect(d.push([0x41, 0xF0, 0x9F]) == "A")
        #expect(d.finish() == "\u{FFFD}")  // incomplete at the end
        #expect(d.push([0xF0, 0x9F, 0x98]) == "")
        #expect(d.push([0x41]) == "\u{FFFD}A")  // interrupted character
        #expect(d.finish() == "")
    }
}

// MARK: - Malformed and small vocabularies (no model needed)

@Suite("Tokenizer vocabularies")
struct TokenizerVocabularyTests {
    private static func gguf(_ edit: (inout GGUFWriter) -> Void) throws -> GGUFFile {
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        edit(&w)
        let bytes = try w.serialize()
        return try bytes.withUnsafeBytes { try GGUFFile(bytes: $0) }
    }

    /// A tiny byte-level vocabulary: all 256 byte characters, a few merges, one control token.
    private static func tiny(_ w: inout GGUFWriter, pre: String = "smollm") {
        var tokens = ["<|im_start|>"]
        for b in 0..<256 {
            tokens.append(String(String.UnicodeScalarView([Unicode.Scalar(TinyBytes.scalar(UInt8(b)))!])))
        }
        tokens += ["he", "ll", "hell", "hello", "Ġw", "Ġwo"]
        var types = [Int32](repeating: 1, count: tokens.count)
        types[0] = 3
        w.set("tokenizer.ggml.model", .string("gpt2"))
        w.set("tokenizer.ggml.pre", .string(pre))
        w.set("tokenizer.ggml.tokens", .array(.string(tokens)))
        w.set("tokenizer.ggml.token_type", .array(.int32(types)))
        w.set("tokenizer.ggml.merges", .array(.string(["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"])))
        w.set("tokenizer.ggml.bos_token_id", .uint32(0))
        w.set("tokenizer.ggml.eos_token_id", .uint32(0))
    }

    @Test func tinyVocabulary() throws {
        let t = try Tokenizer(gguf: try Self.gguf { Self.tiny(&$0) })
        let hello = try #require(t.tokenID("hello")), wo = try #require(t.tokenID("Ġwo"))
        let r = try #require(t.tokenID("r"))
        #expect(t.encode("hello wor", addSpecial: false, parseSpecial: false) == [hello, wo, r])
        #expect(t.encode("<|im_start|>hello", addSpecial: false, parseSpecial: true) == [0, hello])
        #expect(try t.decode(t.encode("héllo\n", addSpecial: false, parseSpecial: false), special: false)
            == Array("héllo\n".utf8))
        #expect(t.addBOS == false)
    }

    @Test func gpt2AndLlama3PreTokenizers() throws {
        let g = try Tokenizer(gguf: try Self.gguf { Self.tiny(&$0, pre: "gpt-2") })
        #expect(g.preTokenizer == .gpt2)
        let l = try Tokenizer(gguf: try Self.gguf { Self.tiny(&$0, pre: "llama-bpe") })
        #expect(l.preTokenizer == .llama3)
        #expect(l.addBOS == true)  // llama3 default
        #expect(l.encode("hello", addSpecial: true, parseSpecial: false).first == 0)
        for t in [g, l] {
            for s in ["hello world 12345 it's", "  x\n\n y", "ÀÉ 日本 😀"] {
                #expect(try t.decode(t.encode(s, addSpecial: false, parseSpecial: false), special: false) == Array(s.utf8))
            }
        }
    }

    @Test func malformedMetadata() throws {
        // Missing tokens list.
        #expect(throws: BatchCoreError.self) {
            try Tokenizer(gguf: try Self.gguf { w in
                Self.tiny(&w)
                w.set("tokenizer.ggml.tokens", .uint32(3))
            })
        }
        // Merges of the wrong type.
        do {
            _ = try Tokenizer(gguf: try Self.gguf { w in
                Self.tiny(&w)
                w.set("tokenizer.ggml.merges", .array(.int32([1, 2])))
            })
            Issue.record("no error")
        } catch let e as BatchCoreError {
            #expect(e.kind == .format)
        }
        // A malformed merge string.
        do {
            _ = try Tokenizer(gguf: try Self.gguf { w in
                Self.tiny(&w)
                w.set("tokenizer.ggml.merges", .array(.string(["hello"])))
            })
            Issue.record("no error")
        } catch let e as BatchCoreError {
            #expect(e.kind == .format)
        }
        // Duplicate tokens.
        do {
            _ = try Tokenizer(gguf: try Self.gguf { w in
                Self.tiny(&w)
                w.set("tokenizer.ggml.tokens", .array(.string(["a", "a"])))
                w.set("tokenizer.ggml.token_type", .array(.int32([1, 1])))
            })
            Issue.record("no error")
        } catch let e as BatchCoreError {
            #expect(e.kind == .format)
        }
        // Token types shorter than the vocabulary.
        do {
            _ = try Tokenizer(gguf: try Self.gguf { w in
                Self.tiny(&w)
                w.set("tokenizer.ggml.token_type", .array(.int32([1])))
            })
            Issue.record("no error")
        } catch let e as BatchCoreError {
            #expect(e.kind == .format)
        }
        // Unsupported model and pre-tokenizer.
        do {
            _ = try Tokenizer(gguf: try Self.gguf { w in
                Self.tiny(&w)
                w.set("tokenizer.ggml.model", .string("llama"))
            })
            Issue.record("no error")
        } catch let e as BatchCoreError {
            #expect(e.kind == .unsupported)
        }
        do {
            _ = try Tokenizer(gguf: try Self.gguf { w in Self.tiny(&w, pre: "qwen2") })
            Issue.record("no error")
        } catch let e as BatchCoreError {
            #expect(e.kind == .unsupported)
        }
    }

    @Test func nonChatMLTemplateIsUnsupported() throws {
        let t = try Tokenizer(gguf: try Self.gguf { w in
            Self.tiny(&w)
            w.set("tokenizer.chat_template", .string("{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"))
        })
        do {
            _ = try t.applyChatML(messages: [(role: "user", content: "x")], addGenerationPrompt: true)
            Issue.record("no error")
        } catch let e as BatchCoreError {
            #expect(e.kind == .unsupported)
        }
        // No template: plain ChatML.
        let plain = try Tokenizer(gguf: try Self.gguf { Self.tiny(&$0) })
        #expect(try plain.applyChatML(messages: [(role: "user", content: "x")], addGenerationPrompt: true)
            == "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n")
    }
}

/// GPT-2's byte-to-character map, written out independently for the tests.
private enum TinyBytes {
    static func scalar(_ b: UInt8) -> UInt32 {
        if (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || b >= 0xAE { return UInt32(b) }
        var n: UInt32 = 0
        for c in 0..<Int(b) {
            let x = UInt8(c)
            if !((0x21...0x7E).contains(x) || (0xA1...0xAC).contains(x) || x >= 0xAE) { n += 1 }
        }
        return 256 + n
    }
}
