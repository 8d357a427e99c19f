import BCCore
import BCKernels
import BCFormats
import BCTokenizer
import BCKV
import BCModel
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Helpers

private func isFormatError(_ body: () throws -> Void) -> Bool {
    do { try body() } catch let e as BatchCoreError { return e.kind == .format } catch { return false }
    return false
}

private func errorKind(_ body: () throws -> Void) -> BatchCoreError.Kind? {
    do { try body() } catch let e as BatchCoreError { return e.kind } catch { return .internal }
    return nil
}

private func tempDirectory(_ tag: String) throws -> String {
    var template = Array((NSTemporaryDirectory() + "/batchcore-\(tag)-XXXXXX").utf8CString)
    let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    guard let p else { throw BatchCoreError.io("mkdtemp failed") }
    return String(cString: p)
}

private func removeTree(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

/// A safetensors file built by hand: header JSON text + data bytes.
private func rawFile(header: String, data: [UInt8], headerLength: UInt64? = nil) -> [UInt8] {
    let h = Array(header.utf8)
    var out: [UInt8] = []
    withUnsafeBytes(of: (headerLength ?? UInt64(h.count)).littleEndian) { out.append(contentsOf: $0) }
    out += h
    out += data
    return out
}

/// Reference float32 → float16 / bfloat16 rounding (round to nearest even) in float64
/// arithmetic: the representable value nearest `x`.
private func referenceRound(_ x: Float, mantissaBits: Int, minNormalExponent: Int, maxFinite: Double) -> Double {
    let d = Double(x)
    if d.isNaN || d.isInfinite { return d }
    let a = abs(d)
    if a == 0 { return d }
    let e = max(a.exponent, minNormalExponent) - mantissaBits
    let q = Double(sign: .plus, exponent: Int(e), significand: 1)
    let r = (a / q).rounded(.toNearestOrEven) * q
    let v = r > maxFinite ? Double.infinity : r
    return d < 0 ? -v : v
}

// MARK: - JSON

@Suite("Safetensors: JSON parser") struct SafetensorsJSONTests {
    @Test func values() throws {
        #expect(try JSONValue.parse("null") == .null)
        #expect(try JSONValue.parse(" true ") == .bool(true))
        #expect(try JSONValue.parse("false") == .bool(false))
        #expect(try JSONValue.parse("0") == .int(0))
        #expect(try JSONValue.parse("-12") == .int(-12))
        #expect(try JSONValue.parse("9223372036854775807") == .int(Int64.max))
        #expect(try JSONValue.parse("-9223372036854775808") == .int(Int64.min))
        #expect(try JSONValue.parse("9223372036854775808") == .double(9223372036854775808.0))
        #expect(try JSONValue.parse("1.5") == .double(1.5))
        #expect(try JSONValue.parse("-1e-5") == .double(-1e-5))
        #expect(try JSONValue.parse("2E+3") == .double(2000))
        #expect(try JSONValue.parse("[]") == .array([]))
        #expect(try JSONValue.parse("{}") == .object(JSONObject()))
        let v = try JSONValue.parse(#"{"a": [1, 2.5, "x", null, {"b": false}], "c": {}}"#)
        #expect(v["a"]?.arrayValue?.count == 5)
        #expect(v["a"]?.arrayValue?[1] == .double(2.5))
        #expect(v["a"]?.arrayValue?[4]["b"] == .bool(false))
        #expect(v.objectValue?.keys == ["a", "c"])
    }

    @Test func strings() throws {
        #expect(try JSONValue.parse(#""plain""#) == .string("plain"))
        #expect(try JSONValue.parse(#""\"\\\/\b\f\n\r\t""#) == .string("\"\\/\u{8}\u{C}\n\r\t"))
        #expect(try JSONValue.parse(#""\u0041\u00e9\u20AC""#) == .string("Aé€"))
        #expect(try JSONValue.parse(#""\ud83d\ude00""#) == .string("😀"))
        #expect(try JSONValue.parse(#""\uD834\uDD1E x""#) == .string("𝄞 x"))
        #expect(try JSONValue.parse("\"héllo ✓ 😀\"") == .string("héllo ✓ 😀"))
        #expect(try JSONValue.parse(#""\u0000""#) == .string("\u{0}"))
    }

    @Test func errorsCarryOffsets() throws {
        let bad: [(String, Int)] = [
            ("", 0), ("[1,]", 3), ("{\"a\" 1}", 5), ("[1 2]", 3), ("01", 0), ("1.", 2), ("1e", 2), ("-", 0),
            ("tru", 0), ("nul", 0), ("[1] x", 4), ("\"abc", 0), ("\"\\x\"", 2), ("\"\\u12G4\"", 5),
            ("\"\\ud800\"", 1), ("\"\\udc00\"", 1), ("\"\\ud800\\u0041\"", 7), ("{\"a\":1,\"a\":2}", 7),
            ("\"a\nb\"", 2), ("{1:2}", 1), ("1e999", 0), ("[", 1), ("{", 1), ("{\"a\":", 5), (".5", 0), ("+1", 0),
        ]
        for (text, offset) in bad {
            do {
                _ = try JSONValue.parse(text)
                Issue.record("accepted \(text.debugDescription)")
            } catch let e as BatchCoreError {
                #expect(e.kind == .format)
                #expect(e.message.hasSuffix("at byte offset \(offset)"), "\(text.debugDescription): \(e.message)")
            }
        }
        // Invalid UTF-8 inside a string.
        #expect(isFormatError { _ = try JSONValue.parse([0x22, 0xC3, 0x28, 0x22]) })
        #expect(isFormatError { _ = try JSONValue.parse([0x22, 0xFF, 0x22]) })
    }

    @Test func limits() throws {
        let ok = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        #expect(throws: Never.self) { _ = try JSONValue.parse(ok) }
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        #expect(isFormatError { _ = try JSONValue.parse(deep) })
        let deepObj = String(repeating: "{\"a\":", count: 100_000)
        #expect(isFormatError { _ = try JSONValue.parse(deepObj) })
        #expect(isFormatError { _ = try JSONValue.parse("[1, 2, 3]", maxSize: 4) })
    }

    @Test func serializationRoundTrip() throws {
        let v = JSONValue.object(JSONObject([
            ("s", .string("q\"\\\n\t\u{1}é😀")), ("i", .int(-42)), ("d", .double(1e-05)), ("w", .double(100000)),
            ("a", .array([.null, .bool(true), .double(0.1), .int(Int64.max)])), ("o", .object(JSONObject())),
        ]))
        for pretty in [false, true] {
            #expect(try JSONValue.parse(v.serialized(pretty: pretty)) == v)
        }
    }

    /// Random bytes, truncations and mutations of valid JSON: errors, never traps.
    @Test func fuzz() throws {
        var rng = SplitMix64(state: 0x1234)
        let valid = Array(#"{"a": [1, -2.5e3, "x\u00e9\ud83d\ude00\n", null, true, false, {"b": {}}], "cc": "\\\"", "n": 0}"#.utf8)
        for n in 0...valid.count { _ = try? JSONValue.parse(Array(valid[0..<n])) }
        let alphabet = Array(#"{}[]":,.-+eE0123456789 tfnrulase\u"#.utf8)
        for _ in 0..<20_000 {
            var doc = valid
            for _ in 0..<Int(rng.next() % 4 + 1) {
                let i = Int(rng.next() % UInt64(doc.count))
                switch rng.next() % 3 {
                case 0: doc[i] = UInt8(truncatingIfNeeded: rng.next())
                case 1: doc[i] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
                default: doc.remove(at: i); if doc.isEmpty { doc = [0x20] }
                }
            }
            _ = try? JSONValue.parse(doc)
        }
        for _ in 0..<5_000 {
            let n = Int(rng.next() % 64)
            let bytes = (0..<n).map { _ in rng.next() % 2 == 0 ? alphabet[Int(rng.next() % UInt64(alphabet.count))] : UInt8(truncatingIfNeeded: rng.next()) }
            _ = try? JSONValue.parse(bytes)
        }
    }
}

// MARK: - Safetensors

@Suite("Safetensors: reader and writer") struct SafetensorsFormatTests {
    static func randomFloats(_ n: Int, _ rng: inout SplitMix64) -> [Float] {
        var out: [Float] = []
        let specials: [Float] = [0, -0.0, 1, -1, .infinity, -.infinity, 65504, 65519.99, 65520, 1e-8, 6e-5, 5.96e-8,
                                 2.98e-8, 3e-8, .leastNonzeroMagnitude, .leastNormalMagnitude, .greatestFiniteMagnitude,
                                 3.3895314e38, 3.4e38, 1.00390625, 1.005859375]
        out += specials
        while out.count < n {
            switch rng.next() % 4 {
            case 0: out.append(rng.uniform())
            case 1: out.append(rng.uniform() * Float(sign: .plus, exponent: Int(rng.next() % 60) - 30, significand: 1))
            case 2: out.append(Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()) & 0x7F7F_FFFF))  // finite
            default: out.append(-Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()) & 0x387F_FFFF))  // tiny
            }
        }
        return out
    }

    @Test func roundTripAllDTypes() throws {
        var rng = SplitMix64(state: 7)
        var w = SafetensorsWriter()
        w.metadata = ["format": "pt", "note": "q\"uote"]
        let a = Self.randomFloats(3 * 5 * 7, &rng), b = Self.randomFloats(1000, &rng), c = Self.randomFloats(257, &rng)
        try w.add("z.f32", shape: [3, 5, 7], dtype: .f32, data: a)
        try w.add("a.f16", shape: [10, 100], dtype: .f16, data: b)
        try w.add("m.bf16", shape: [257], dtype: .bf16, data: c)
        try w.add("scalar", shape: [], dtype: .f32, data: [42])
        try w.add("empty", shape: [0, 4], dtype: .bf16, data: [])
        let bytes = try w.serialized()
        let headerLength = Int(bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        #expect(headerLength % 8 == 0)
        #expect(bytes[8] == UInt8(ascii: "{"))
        let header = String(decoding: bytes[8..<(8 + headerLength)], as: UTF8.self)
        #expect(header.hasSuffix("}") || header.hasSuffix(" "))
        #expect(header.trimmingCharacters(in: .whitespaces).hasSuffix("}"))

        let f = try SafetensorsFile(bytes: bytes)
        #expect(f.metadata == w.metadata)
        #expect(f.tensors.map(\.name).sorted() == ["a.f16", "empty", "m.bf16", "scalar", "z.f32"])
        #expect(f.tensor(named: "z.f32")?.shape == [3, 5, 7])
        #expect(f.tensor(named: "a.f16")?.dtype == .f16)
        #expect(f.tensor(named: "scalar")?.shape == [])
        #expect(try f.floats("scalar") == [42])
        #expect(try f.floats("empty") == [])
        let ra = try f.floats("z.f32")
        #expect(ra.map(\.bitPattern) == a.map(\.bitPattern))
        let rb = try f.floats("a.f16")
        for (x, y) in zip(b, rb) {
            let ref = referenceRound(x, mantissaBits: 10, minNormalExponent: -14, maxFinite: 65504)
            #expect(Double(y) == ref || (ref.isNaN && y.isNaN), "f16 of \(x): got \(y), want \(ref)")
        }
        let rc = try f.floats("m.bf16")
        for (x, y) in zip(c, rc) {
            let maxBF16 = Double(Float(bitPattern: 0x7F7F_0000))
            let ref = referenceRound(x, mantissaBits: 7, minNormalExponent: -126, maxFinite: maxBF16)
            #expect(Double(y) == ref, "bf16 of \(x): got \(y), want \(ref)")
        }
        // Stable output: the same tensors added in another order give the same bytes.
        var w2 = SafetensorsWriter()
        w2.metadata = w.metadata
        try w2.add("empty", shape: [0, 4], dtype: .bf16, data: [])
        try w2.add("scalar", shape: [], dtype: .f32, data: [42])
        try w2.add("m.bf16", shape: [257], dtype: .bf16, data: c)
        try w2.add("a.f16", shape: [10, 100], dtype: .f16, data: b)
        try w2.add("z.f32", shape: [3, 5, 7], dtype: .f32, data: a)
        #expect(try w2.serialized() == bytes)
        // NaN survives both half formats.
        var w3 = SafetensorsWriter()
        try w3.add("h", shape: [1], dtype: .f16, data: [.nan])
        try w3.add("b", shape: [1], dtype: .bf16, data: [.nan])
        let f3 = try SafetensorsFile(bytes: try w3.serialized())
        #expect(try f3.floats("h")[0].isNaN)
        #expect(try f3.floats("b")[0].isNaN)
        // Writer argument checks.
        #expect(errorKind { try w3.add("h", shape: [1], dtype: .f32, data: [1]) } == .invalidArgument)
        #expect(errorKind { try w3.add("x", shape: [2], dtype: .f32, data: [1]) } == .invalidArgument)
        #expect(errorKind { try w3.add("y", shape: [1], dtype: .i32, data: [1]) } == .unsupported)
    }

    @Test func fileWriteIsAtomicAndMapped() throws {
        let dir = try tempDirectory("st")
        defer { removeTree(dir) }
        var w = SafetensorsWriter()
        try w.add("t", shape: [2, 2], data: [1, 2, 3, 4])
        try w.write(to: dir + "/x.safetensors")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasPrefix("x.safetensors.tmp") }.isEmpty)
        let f = try SafetensorsFile(path: dir + "/x.safetensors")
        #expect(try f.floats("t") == [1, 2, 3, 4])
        #expect(errorKind { _ = try SafetensorsFile(path: dir + "/missing.safetensors") } == .io)
        #expect(errorKind { _ = try SafetensorsFile(path: dir) } == .io)
    }

    @Test func sharded() throws {
        let dir = try tempDirectory("shard")
        defer { removeTree(dir) }
        var w1 = SafetensorsWriter(), w2 = SafetensorsWriter()
        try w1.add("a", shape: [2], data: [1, 2])
        try w2.add("b", shape: [3], dtype: .bf16, data: [3, 4, 5])
        try w1.write(to: dir + "/model-00001-of-00002.safetensors")
        try w2.write(to: dir + "/model-00002-of-00002.safetensors")
        let index = #"{"metadata": {"total_size": 14}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#
        try index.write(toFile: dir + "/model.safetensors.index.json", atomically: true, encoding: .utf8)
        let c = try SafetensorsCollection(directory: dir)
        #expect(c.tensorNames == ["a", "b"])
        #expect(try c.floats("a") == [1, 2])
        #expect(try c.floats("b") == [3, 4, 5])
        // A weight map naming the wrong shard, or a file outside the directory.
        let wrong = #"{"weight_map": {"a": "model-00002-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}"#
        try wrong.write(toFile: dir + "/model.safetensors.index.json", atomically: true, encoding: .utf8)
        #expect(isFormatError { _ = try SafetensorsCollection(directory: dir) })
        let escape = #"{"weight_map": {"a": "../x.safetensors"}}"#
        try escape.write(toFile: dir + "/model.safetensors.index.json", atomically: true, encoding: .utf8)
        #expect(isFormatError { _ = try SafetensorsCollection(directory: dir) })
    }

    @Test func hostileHeaders() throws {
        let data = [UInt8](repeating: 0, count: 16)
        func bad(_ header: String, data: [UInt8] = data, length: UInt64? = nil, _ line: Int = #line) {
            let kind = errorKind { _ = try SafetensorsFile(bytes: rawFile(header: header, data: data, headerLength: length)) }
            #expect(kind == .format, "line \(line): \(header.prefix(80)) gave \(String(describing: kind))")
        }
        let good = #"{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#
        #expect(throws: Never.self) { _ = try SafetensorsFile(bytes: rawFile(header: good, data: data)) }
        #expect(throws: Never.self) { _ = try SafetensorsFile(bytes: rawFile(header: good + "    ", data: data)) }
        // Header length: huge, past the end, too small.
        for len: UInt64 in [UInt64.max, 1 << 63, 1 << 40, 200 << 20, UInt64(good.utf8.count + 17), 0, 1] {
            bad(good, length: len)
        }
        // Offsets.
        bad(#"{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,9223372036854775807]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[9223372036854775807,9223372036854775807]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,18446744073709551615]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,1e300]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[-16,0]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[4,20]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16,32]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0.0,16]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[2,2]}}"#)
        // Shapes.
        bad(#"{"t":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,16]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[2305843009213693952],"data_offsets":[0,16]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,16]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[4.0],"data_offsets":[0,16]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[1,1,1,1,4],"data_offsets":[0,16]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":"4","data_offsets":[0,16]}}"#)
        // dtypes, structure, overlap.
        bad(#"{"t":{"dtype":"F33","shape":[4],"data_offsets":[0,16]}}"#)
        bad(#"{"t":{"dtype":3,"shape":[4],"data_offsets":[0,16]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16],"x":1}}"#)
        bad(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#)
        bad(#"{"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#)
        bad(#"{"__metadata__":{"k":1}}"#)
        bad(#"{"__metadata__":[]}"#)
        bad(#"{"t":[]}"#)
        bad(#"[]"#)
        bad(#" {}"#)
        bad(#"{"#)
        bad("{\"t\":\u{0}}")
        // Zero-size tensors may share offsets; other dtypes are readable as bytes only.
        let ok = #"{"e":{"dtype":"F16","shape":[0],"data_offsets":[4,4]},"i":{"dtype":"I32","shape":[4],"data_offsets":[0,16]}}"#
        let f = try SafetensorsFile(bytes: rawFile(header: ok, data: data))
        #expect(try f.tensorData("i").count == 16)
        #expect(errorKind { _ = try f.floats("i") } == .unsupported)
        #expect(errorKind { _ = try f.floats("nope") } == .notFound)
    }

    /// Truncation at every length, bit flips, and random header edits: BatchCoreError
    /// or a valid file, never a trap or a huge allocation.
    @Test func fuzz() throws {
        var w = SafetensorsWriter()
        w.metadata = ["format": "pt"]
        try w.add("a", shape: [2, 3], dtype: .f32, data: [1, 2, 3, 4, 5, 6])
        try w.add("b", shape: [4], dtype: .f16, data: [1, 2, 3, 4])
        try w.add("c", shape: [1, 1, 2], dtype: .bf16, data: [7, 8])
        let file = try w.serialized()
        for n in 0..<file.count {
            #expect(isFormatError { _ = try SafetensorsFile(bytes: Array(file[0..<n])) }, "truncated to \(n)")
        }
        func tryRead(_ bytes: [UInt8]) {
            do {
                let f = try SafetensorsFile(bytes: bytes)
                for t in f.tensors where t.dtype.isFloat { _ = try f.floats(t.name) }
            } catch let e as BatchCoreError {
                #expect(e.kind == .format || e.kind == .unsupported)
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
        for bit in 0..<(file.count * 8) {
            var m = file
            m[bit / 8] ^= UInt8(1 << (bit % 8))
            tryRead(m)
        }
        // Digits of the header replaced by huge or odd numbers.
        var rng = SplitMix64(state: 99)
        let headerLength = Int(file.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let header = String(decoding: file[8..<(8 + headerLength)], as: UTF8.self)
        let body = Array(file[(8 + headerLength)...])
        let numbers = ["9223372036854775807", "18446744073709551616", "-1", "1e308", "0", "4294967296", "99999999999999999999999", "3.5", "null", "\"1\""]
        let digitRuns = header.utf8.indices.filter { i in
            let c = header.utf8[i]
            return c >= 0x30 && c <= 0x39 && (i == header.utf8.startIndex || !(header.utf8[header.utf8.index(before: i)] >= 0x30 && header.utf8[header.utf8.index(before: i)] <= 0x39))
        }
        for start in digitRuns {
            var end = start
            while end < header.utf8.endIndex, header.utf8[end] >= 0x30, header.utf8[end] <= 0x39 { end = header.utf8.index(after: end) }
            for num in numbers {
                let edited = String(header[..<start]) + num + String(header[end...])
                tryRead(rawFile(header: edited, data: body))
            }
        }
        for _ in 0..<3000 {
            var m = file
            for _ in 0..<Int(rng.next() % 3 + 1) {
                let i = Int(rng.next() % UInt64(m.count))
                m[i] = UInt8(truncatingIfNeeded: rng.next())
            }
            tryRead(m)
        }
    }
}

// MARK: - Hugging Face layout

@Suite("Safetensors: Hugging Face config and RoPE layout") struct SafetensorsHFTests {
    static let llamaConfig = #"""
    {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536,
     "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "rms_norm_eps": 1e-05,
     "rope_theta": 100000, "max_position_embeddings": 8192, "vocab_size": 49152, "tie_word_embeddings": true,
     "rope_scaling": null, "hidden_act": "silu", "torch_dtype": "bfloat16"}
    """#

    @Test func config() throws {
        let c = try HFModel.config(json: try JSONValue.parse(Self.llamaConfig))
        #expect(c.layerCount == 30 && c.embeddingDim == 576 && c.headCount == 9 && c.kvHeadCount == 3)
        #expect(c.feedForwardDim == 1536 && c.vocabSize == 49152 && c.contextLength == 8192)
        #expect(c.ropeBase == 100000 && c.rmsEps == Float(1e-5) && c.tiedEmbeddings)
        // Written config reads back equal.
        #expect(try HFModel.config(json: try JSONValue.parse(HFModel.configJSON(c).serialized(pretty: true))) == c)

        func edited(_ edit: (inout JSONObject) -> Void) throws -> JSONValue {
            var o = try #require(try JSONValue.parse(Self.llamaConfig).objectValue)
            edit(&o)
            return .object(o)
        }
        func kind(_ edit: (inout JSONObject) -> Void) throws -> BatchCoreError.Kind? {
            let v = try edited(edit)
            return errorKind { _ = try HFModel.config(json: v) }
        }
        #expect(try kind { $0["rope_scaling"] = .object(JSONObject([("type", .string("linear")), ("factor", .double(2))])) } == .unsupported)
        #expect(try kind { $0["architectures"] = .array([.string("GPT2LMHeadModel")]) } == .unsupported)
        #expect(try kind { $0["architectures"] = .array([.string("MistralForCausalLM")]); $0["sliding_window"] = .int(4096) } == .unsupported)
        #expect(try kind { $0["architectures"] = .array([.string("MistralForCausalLM")]); $0["sliding_window"] = .null } == nil)
        #expect(try kind { $0["hidden_act"] = .string("gelu") } == .unsupported)
        #expect(try kind { $0["head_dim"] = .int(128) } == .unsupported)
        #expect(try kind { $0["attention_bias"] = .bool(true) } == .unsupported)
        #expect(try kind { $0["hidden_size"] = .int(-1) } == .format)
        #expect(try kind { $0["hidden_size"] = .double(1e300) } == .format)
        #expect(try kind { $0["num_attention_heads"] = .int(7) } == .format)
        #expect(try kind { $0["vocab_size"] = nil } == .format)
        #expect(try kind { $0["rms_norm_eps"] = .string("x") } == .format)
        #expect(try kind { $0["num_key_value_heads"] = nil } == nil)
    }

    /// HF's rotate-half RoPE on a head equals batchcore's adjacent-pair RoPE on the
    /// permuted head.
    @Test func ropePermutationMatchesRotateHalf() throws {
        let hd = 16, heads = 3, base: Float = 10000
        var rng = SplitMix64(state: 5)
        let x = (0..<heads * hd).map { _ in rng.uniform() }
        let rope = RotaryEmbedding(headDim: hd, base: base)
        for position in [0, 1, 7, 123] {
            // HF: out[i] = x[i]cos - x[i+h]sin, out[i+h] = x[i+h]cos + x[i]sin.
            var hf = x
            let half = hd / 2
            for h in 0..<heads {
                for i in 0..<half {
                    let theta = Double(position) * pow(Double(base), -2 * Double(i) / Double(hd))
                    let c = Float(cos(theta)), s = Float(sin(theta))
                    let a = x[h * hd + i], b = x[h * hd + i + half]
                    hf[h * hd + i] = a * c - b * s
                    hf[h * hd + i + half] = b * c + a * s
                }
            }
            var permuted = [Float](repeating: 0, count: x.count), hfPermuted = permuted
            x.withUnsafeBufferPointer { s in permuted.withUnsafeMutableBufferPointer { d in
                LlamaTensorNames.permuteRoPERows(s.baseAddress!, d.baseAddress!, heads: heads, headDim: hd, cols: 1, inverse: false)
            } }
            hf.withUnsafeBufferPointer { s in hfPermuted.withUnsafeMutableBufferPointer { d in
                LlamaTensorNames.permuteRoPERows(s.baseAddress!, d.baseAddress!, heads: heads, headDim: hd, cols: 1, inverse: false)
            } }
            permuted.withUnsafeMutableBufferPointer { rope.apply($0.baseAddress!, heads: heads, position: position) }
            for i in 0..<x.count { #expect(abs(permuted[i] - hfPermuted[i]) <= 1e-5, "position \(position) index \(i)") }
            // The inverse undoes the permutation.
            var back = [Float](repeating: 0, count: x.count)
            hfPermuted.withUnsafeBufferPointer { s in back.withUnsafeMutableBufferPointer { d in
                LlamaTensorNames.permuteRoPERows(s.baseAddress!, d.baseAddress!, heads: heads, headDim: hd, cols: 1, inverse: true)
            } }
            #expect(back == hf)
        }
    }

    @Test func tokenizerJSONVariants() throws {
        // A tiny byte-level vocabulary: every byte character, plus "ab" and "abc".
        var vocab: [(String, JSONValue)] = []
        var id = 0
        var byteChars: [String] = []
        for b in 0..<256 {
            let isSelf = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE
            _ = isSelf
            byteChars.append("")
        }
        var next = 256
        for b in 0..<256 {
            let isSelf = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE
            let scalar = isSelf ? b : { defer { next += 1 }; return next }()
            byteChars[b] = String(Character(Unicode.Scalar(UInt32(scalar))!))
        }
        for c in byteChars { vocab.append((c, .int(Int64(id)))); id += 1 }
        vocab.append(("ab", .int(Int64(id)))); id += 1
        vocab.append(("abc", .int(Int64(id)))); id += 1
        let special = id
        func tokenizerJSON(pre: JSONValue, merges: JSONValue) -> JSONValue {
            .object(JSONObject([
                ("added_tokens", .array([.object(JSONObject([("id", .int(Int64(special))), ("content", .string("<|end|>")), ("special", .bool(true))]))])),
                ("normalizer", .null), ("pre_tokenizer", pre),
                ("model", .object(JSONObject([("type", .string("BPE")), ("vocab", .object(JSONObject(vocab))), ("merges", merges)]))),
            ]))
        }
        let byteLevel = JSONValue.object(JSONObject([("type", .string("ByteLevel")), ("add_prefix_space", .bool(false)), ("use_regex", .bool(true))]))
        let stringMerges = JSONValue.array([.string("a b"), .string("ab c")])
        let pairMerges = JSONValue.array([.array([.string("a"), .string("b")]), .array([.string("ab"), .string("c")])])
        for merges in [stringMerges, pairMerges] {
            let t = try Tokenizer(tokenizerJSON: tokenizerJSON(pre: byteLevel, merges: merges),
                                  tokenizerConfig: try JSONValue.parse(#"{"eos_token": {"content": "<|end|>"}, "chat_template": "x"}"#))
            #expect(t.pre == "gpt2")
            #expect(t.vocabularySize == special + 1)
            #expect(t.mergeCount == 2)
            #expect(t.eos == Int32(special))
            #expect(t.chatTemplate == "x")
            #expect(try t.tokenType(Int32(special)) == .control)
            #expect(t.encode("abc ab<|end|>", addSpecial: false, parseSpecial: true)
                    == [Int32(257), t.tokenID(byteChars[0x20])!, 256, Int32(special)])
        }
        let digits = JSONValue.object(JSONObject([("type", .string("Sequence")), ("pretokenizers", .array([
            .object(JSONObject([("type", .string("Digits")), ("individual_digits", .bool(true))])), byteLevel]))]))
        #expect(try Tokenizer(tokenizerJSON: tokenizerJSON(pre: digits, merges: stringMerges)).pre == "smollm")
        let llama3 = try JSONValue.parse(#"""
        {"type": "Sequence", "pretokenizers": [
          {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
          {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}
        """#)
        #expect(try Tokenizer(tokenizerJSON: tokenizerJSON(pre: llama3, merges: stringMerges)).pre == "llama-bpe")
        let whitespace = JSONValue.object(JSONObject([("type", .string("Whitespace"))]))
        #expect(errorKind { _ = try Tokenizer(tokenizerJSON: tokenizerJSON(pre: whitespace, merges: stringMerges)) } == .unsupported)
        #expect(errorKind { _ = try Tokenizer(tokenizerJSON: tokenizerJSON(pre: .null, merges: stringMerges)) } == .unsupported)
        #expect(errorKind { _ = try Tokenizer(tokenizerJSON: tokenizerJSON(pre: byteLevel, merges: .array([.int(3)]))) } == .format)
    }
}

// MARK: - End to end with SmolLM2

private enum HFExportFixture {
    static let ggufPath = (ProcessInfo.processInfo.environment["HOME"] ?? "/root")
        + "/.cache/batchcore/SmolLM2-135M-Instruct.Q4_1.gguf"
    static var available: Bool { FileManager.default.fileExists(atPath: ggufPath) }
}

@Suite("Safetensors: GGUF → Hugging Face → batchcore (SmolLM2)", .enabled(if: HFExportFixture.available))
struct SafetensorsEndToEndTests {
    static func logits(_ model: LanguageModel, _ ids: [Int32]) throws -> [Float] {
        let c = model.config
        let cache = ContiguousKVCache(layerCount: c.layerCount, kvDim: c.kvDim, maxLength: 64)
        var batch = TokenBatch()
        for (p, t) in ids.enumerated() { batch.append(t, position: p, sequence: 0, logits: true) }
        var out = [Float](repeating: 0, count: ids.count * c.vocabSize)
        try out.withUnsafeMutableBufferPointer { try model.transformer.forward(batch, cache: cache, logits: $0.baseAddress) }
        return out
    }

    @Test func exportAndReload() throws {
        let gguf = try LanguageModel(path: HFExportFixture.ggufPath, weights: .float32) // the export writes f32
        let dir = try tempDirectory("hf")
        defer { removeTree(dir) }
        try gguf.writeHuggingFace(directory: dir)
        for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
            #expect(FileManager.default.fileExists(atPath: dir + "/" + f), "\(f) missing")
        }
        // Exported tensors are in HF's layout and shapes.
        let st = try SafetensorsFile(path: dir + "/model.safetensors")
        #expect(st.tensor(named: "model.layers.0.self_attn.k_proj.weight")?.shape == [192, 576])
        #expect(st.tensor(named: "lm_head.weight") == nil)

        let hf = try LanguageModel(path: dir)
        #expect(hf.config == gguf.config)

        // (a) every weight matrix bit-for-bit.
        func same(_ a: Linear, _ b: Linear, _ what: String) {
            let equal = a.rows == b.rows && a.cols == b.cols
                && (try? a.withRowMajor { pa in try b.withRowMajor { pb in memcmp(pa, pb, a.rows * a.cols * 4) == 0 } }) == true
            #expect(equal, "\(what) differs")
        }
        func same(_ a: WeightVector, _ b: WeightVector, _ what: String) {
            #expect(a.count == b.count && memcmp(a.data, b.data, a.count * 4) == 0, "\(what) differs")
        }
        let wa = gguf.transformer.weights, wb = hf.transformer.weights
        same(wa.tokenEmbedding, wb.tokenEmbedding, "token embedding")
        same(wa.outputNorm, wb.outputNorm, "output norm")
        same(wa.output, wb.output, "output")
        #expect(wb.output === wb.tokenEmbedding)
        #expect(wa.layers.count == wb.layers.count)
        for (i, (la, lb)) in zip(wa.layers, wb.layers).enumerated() {
            same(la.attentionNorm, lb.attentionNorm, "layer \(i) attention norm")
            same(la.qkv, lb.qkv, "layer \(i) qkv")
            same(la.wo, lb.wo, "layer \(i) wo")
            same(la.ffnNorm, lb.ffnNorm, "layer \(i) ffn norm")
            same(la.gateUp, lb.gateUp, "layer \(i) gate/up")
            same(la.down, lb.down, "layer \(i) down")
        }

        // (b) logits identical.
        let ids = gguf.tokenizer.encode("<|im_start|>user\nWhat is 2+2?<|im_end|>\n", addSpecial: true, parseSpecial: true)
        let la = try Self.logits(gguf, ids), lb = try Self.logits(hf, ids)
        #expect(la.map(\.bitPattern) == lb.map(\.bitPattern))

        // (c) tokenizer identical on the corpus.
        let ta = gguf.tokenizer, tb = hf.tokenizer
        #expect(ta.tokens == tb.tokens)
        #expect(ta.tokenTypes == tb.tokenTypes)
        #expect(ta.mergeCount == tb.mergeCount)
        #expect(ta.pre == tb.pre)
        #expect(ta.bos == tb.bos && ta.eos == tb.eos && ta.unk == tb.unk && ta.pad == tb.pad && ta.eot == tb.eot)
        #expect(ta.addBOS == tb.addBOS && ta.addEOS == tb.addEOS)
        #expect(ta.endOfGeneration == tb.endOfGeneration)
        #expect(ta.chatTemplate == tb.chatTemplate)
        let corpus = try String(contentsOfFile: Repo.path("Tests/fixtures/llama/tokenizer_corpus.txt"), encoding: .utf8)
        let lines = corpus.split(separator: "\n", omittingEmptySubsequences: false).prefix(300).map(String.init)
        var mismatches = 0
        for line in lines {
            for special in [false, true] where ta.encode(line, addSpecial: special, parseSpecial: special)
                != tb.encode(line, addSpecial: special, parseSpecial: special) {
                mismatches += 1
            }
        }
        #expect(mismatches == 0)
        #expect(try ta.decode(ta.encode(corpus, addSpecial: false, parseSpecial: false), special: true)
                == tb.decode(tb.encode(corpus, addSpecial: false, parseSpecial: false), special: true))

        // The .safetensors file path also loads (config.json from its directory).
        let viaFile = try LanguageModel(path: dir + "/model.safetensors")
        same(wa.layers[3].qkv, viaFile.transformer.weights.layers[3].qkv, "qkv via file path")

        // BF16 export of the same model is within bf16 rounding of the f32 weights.
        let dir16 = try tempDirectory("hf16")
        defer { removeTree(dir16) }
        try hf.transformer.writeHuggingFace(directory: dir16, dtype: .bf16)
        let st16 = try SafetensorsFile(path: dir16 + "/model.safetensors")
        #expect(st16.tensor(named: "model.layers.0.mlp.down_proj.weight")?.dtype == .bf16)
        let down16 = try st16.floats("model.layers.0.mlp.down_proj.weight")
        let down32 = try st.floats("model.layers.0.mlp.down_proj.weight")
        for (x, y) in zip(down32, down16) where abs(x - y) > abs(x) * 0.0040 { Issue.record("bf16 \(x) vs \(y)"); break }
    }
}
