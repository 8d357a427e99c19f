import BCCore
import BCFormats
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

// MARK: - Helpers

/// Parses in-memory GGUF bytes.
private func parseGGUF(_ bytes: [UInt8]) throws -> GGUFFile {
    try bytes.withUnsafeBytes { try GGUFFile(bytes: $0) }
}

/// Raw little-endian builder for hand-made (possibly hostile) GGUF files.
private struct Raw {
    var bytes: [UInt8] = []
    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func str(_ s: String) { u64(UInt64(s.utf8.count)); bytes.append(contentsOf: s.utf8) }
    mutating func header(version: UInt32 = 3, tensors: UInt64, kvs: UInt64) {
        bytes.append(contentsOf: Array("GGUF".utf8)); u32(version); u64(tensors); u64(kvs)
    }
    mutating func pad(to alignment: Int = 32) {
        while bytes.count % alignment != 0 { bytes.append(0) }
    }
    mutating func zeros(_ n: Int) { bytes.append(contentsOf: repeatElement(0, count: n)) }
    /// A tensor info: name, n_dims, dims, type, offset.
    mutating func tensorInfo(_ name: String, dims: [UInt64], type: UInt32, offset: UInt64, nDims: UInt32? = nil) {
        str(name); u32(nDims ?? UInt32(dims.count)); for d in dims { u64(d) }; u32(type); u64(offset)
    }
}

private func randomHalfBits<G: RandomNumberGenerator>(_ g: inout G) -> UInt16 {
    while true {
        let b = UInt16.random(in: 0...UInt16.max, using: &g)
        if (b >> 10) & 0x1F != 0x1F { return b }  // finite only (no inf/NaN)
    }
}

private func randomBF16Bits<G: RandomNumberGenerator>(_ g: inout G) -> UInt16 {
    while true {
        let b = UInt16.random(in: 0...UInt16.max, using: &g)
        if (b >> 7) & 0xFF != 0xFF { return b }
    }
}

/// IEEE half to double, decoded from the bit fields (independent of Float16).
private func refHalf(_ bits: UInt16) -> Double {
    let sign: FloatingPointSign = bits >> 15 == 1 ? .minus : .plus
    let e = Int((bits >> 10) & 0x1F), m = Double(bits & 0x3FF)
    if e == 0 { return Double(sign: sign, exponent: -24, significand: m) }
    return Double(sign: sign, exponent: e - 25, significand: 1024 + m)
}

/// bfloat16 to double, decoded from the bit fields.
private func refBF16(_ bits: UInt16) -> Double {
    let sign: FloatingPointSign = bits >> 15 == 1 ? .minus : .plus
    let e = Int((bits >> 7) & 0xFF), m = Double(bits & 0x7F)
    if e == 0 { return Double(sign: sign, exponent: -133, significand: m) }
    return Double(sign: sign, exponent: e - 134, significand: 128 + m)
}

private func le16(_ v: UInt16) -> [UInt8] { [UInt8(v & 0xFF), UInt8(v >> 8)] }

/// Float64 reference dequantization of one block, straight from the ggml layout.
private func refDequantize(_ type: GGMLType, _ block: ArraySlice<UInt8>) -> [Double] {
    let b = Array(block)
    let d = refHalf(UInt16(b[0]) | UInt16(b[1]) << 8)
    switch type {
    case .q8_0:
        return (0..<32).map { Double(Int8(bitPattern: b[2 + $0])) * d }
    case .q4_0:
        return (0..<32).map { i in
            let byte = b[2 + i % 16]
            let q = i < 16 ? Int(byte & 0xF) : Int(byte >> 4)
            return Double(q - 8) * d
        }
    case .q4_1:
        let m = refHalf(UInt16(b[2]) | UInt16(b[3]) << 8)
        return (0..<32).map { i in
            let byte = b[4 + i % 16]
            let q = i < 16 ? Int(byte & 0xF) : Int(byte >> 4)
            return Double(q) * d + m
        }
    default:
        fatalError("no reference for \(type)")
    }
}

private func currentMaxRSSBytes() -> Int {
    var usage = rusage()
    getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
    return usage.ru_maxrss * 1024
}

/// A small valid file with every metadata type and one tensor of each dequantizable type.
private func sampleFile() throws -> [UInt8] {
    var w = GGUFWriter()
    w.set("general.architecture", .string("llama"))
    w.set("general.name", .string("tiny ✓"))
    w.set("u8", .uint8(7))
    w.set("i8", .int8(-7))
    w.set("u16", .uint16(700))
    w.set("i16", .int16(-700))
    w.set("u32", .uint32(70000))
    w.set("i32", .int32(-70000))
    w.set("f32", .float32(1.5))
    w.set("b", .bool(true))
    w.set("u64", .uint64(1 << 40))
    w.set("i64", .int64(-(1 << 40)))
    w.set("f64", .float64(0.25))
    w.set("tokens", .array(.string(["a", "bc", "", "déf"])))
    w.set("scores", .array(.float32([0.5, -1, 2])))
    w.set("types", .array(.int32([1, 2, 3])))
    w.set("nested", .array(.array([.uint8([1, 2]), .string(["x"]), .array([.bool([true, false])])])))
    try w.addTensor(name: "f32", dims: [8, 2], floats: (0..<16).map { Float($0) - 4.5 })
    try w.addTensor(name: "f16", dims: [16], type: .f16, data: (0..<16).flatMap { le16(Float16(Float($0) / 4).bitPattern) })
    try w.addTensor(name: "bf16", dims: [4], type: .bf16, data: [0x80, 0x3F, 0x00, 0xC0, 0x49, 0x40, 0, 0])
    var q8: [UInt8] = le16(Float16(0.5).bitPattern) + (0..<32).map { UInt8(bitPattern: Int8($0 - 16)) }
    q8 += le16(Float16(-0.25).bitPattern) + (0..<32).map { UInt8($0 * 3) }
    try w.addTensor(name: "q8", dims: [32, 2], type: .q8_0, data: q8)
    try w.addTensor(name: "q4_0", dims: [32], type: .q4_0, data: le16(Float16(2).bitPattern) + (0..<16).map { UInt8($0 * 17) })
    try w.addTensor(name: "q4_1", dims: [32, 1, 1, 1], type: .q4_1,
                    data: le16(Float16(0.5).bitPattern) + le16(Float16(-3).bitPattern) + (0..<16).map { UInt8(255 - $0) })
    return try w.serialize()
}

/// What parsing a (possibly corrupted) file did.
private enum Outcome: Equatable { case parsed, rejected(BatchCoreError.Kind) }

/// Parses `bytes`; a successful parse is exercised fully (metadata, every tensor's
/// data, dequantization). Any error other than BatchCoreError is recorded as an issue.
private func attempt(_ bytes: [UInt8], _ label: @autoclosure () -> String) -> Outcome {
    do {
        let f = try parseGGUF(bytes)
        var sink = 0.0
        for key in f.metadataKeys { sink += Double(f.metadata[key]!.description.utf8.count) }
        for t in f.tensors {
            let data = try f.tensorData(t.name)
            #expect(data.count == t.byteCount, "\(label())")
            #expect(f.dataOffset + t.offset + t.byteCount <= bytes.count, "\(label())")
            if t.type.canDequantize {
                let values = try f.dequantizeTensor(t.name)
                sink += values.reduce(0) { $0 + Double($1.isFinite ? $1 : 0) }
            }
        }
        _ = sink
        return .parsed
    } catch let e as BatchCoreError {
        return .rejected(e.kind)
    } catch {
        Issue.record("\(label()): unexpected error type \(error)")
        return .rejected(.internal)
    }
}

// MARK: - Round trips

@Suite struct GGUFRoundTripTests {
    @Test func everyMetadataTypeRoundTrips() throws {
        var g = SystemRandomNumberGenerator()
        let values: [(String, GGUFValue)] = [
            ("u8", .uint8(.max)), ("i8", .int8(.min)), ("u16", .uint16(.max)), ("i16", .int16(.min)),
            ("u32", .uint32(.max)), ("i32", .int32(.min)), ("f32", .float32(-1.0e-30)), ("t", .bool(true)),
            ("f", .bool(false)), ("s", .string("héllo ✓ 🦙")), ("empty", .string("")),
            ("long", .string(String(repeating: "ab", count: 50_000))),
            ("u64", .uint64(.max)), ("i64", .int64(.min)), ("f64", .float64(.pi)),
            ("inf", .float32(.infinity)), ("ninf", .float64(-.infinity)),
            ("a.u8", .array(.uint8((0..<300).map { _ in .random(in: 0...255, using: &g) }))),
            ("a.i8", .array(.int8((0..<17).map { _ in .random(in: .min ... .max, using: &g) }))),
            ("a.u16", .array(.uint16((0..<17).map { _ in .random(in: .min ... .max, using: &g) }))),
            ("a.i16", .array(.int16((0..<17).map { _ in .random(in: .min ... .max, using: &g) }))),
            ("a.u32", .array(.uint32((0..<17).map { _ in .random(in: .min ... .max, using: &g) }))),
            ("a.i32", .array(.int32((0..<17).map { _ in .random(in: .min ... .max, using: &g) }))),
            ("a.f32", .array(.float32((0..<17).map { _ in .random(in: -1e6...1e6, using: &g) }))),
            ("a.bool", .array(.bool((0..<17).map { _ in .random(using: &g) }))),
            ("a.str", .array(.string(["", "x", "日本語", String(repeating: "z", count: 1000)]))),
            ("a.u64", .array(.uint64((0..<17).map { _ in .random(in: .min ... .max, using: &g) }))),
            ("a.i64", .array(.int64((0..<17).map { _ in .random(in: .min ... .max, using: &g) }))),
            ("a.f64", .array(.float64((0..<17).map { _ in .random(in: -1e300...1e300, using: &g) }))),
            ("a.empty.u8", .array(.uint8([]))), ("a.empty.str", .array(.string([]))),
            ("a.empty.arr", .array(.array([]))), ("a.empty.f64", .array(.float64([]))),
            ("nested2", .array(.array([.uint32([1, 2, 3]), .uint32([]), .int8([-1]), .string(["in", "ner"])]))),
            ("nested3", .array(.array([.array([.string(["deep"]), .float64([1.5])]), .array([]), .bool([true])]))),
            ("nested4", .array(.array([.array([.array([.int64([.min, .max])])])]))),
        ]
        var w = GGUFWriter()
        for (k, v) in values { w.set(k, v) }
        w.set("nan", .float32(Float(nan: 0x123, signaling: false)))
        let f = try parseGGUF(try w.serialize())
        #expect(f.version == 3)
        #expect(f.metadataKeys == values.map(\.0) + ["nan"])
        #expect(f.tensors.isEmpty)
        for (k, v) in values { #expect(f.value(k) == v, "\(k)") }
        guard case .float32(let nan) = f.value("nan") else { Issue.record("nan lost its type"); return }
        #expect(nan.bitPattern == Float(nan: 0x123, signaling: false).bitPattern)
    }

    @Test func typedAccessors() throws {
        var w = GGUFWriter()
        w.set("u16", .uint16(49152)); w.set("i8", .int8(-3)); w.set("big", .uint64(.max))
        w.set("f32", .float32(1e-5)); w.set("f64", .float64(0.1)); w.set("b", .bool(true))
        w.set("s", .string("gpt2")); w.set("toks", .array(.string(["a", "b"])))
        w.set("ints", .array(.int16([-1, 2]))); w.set("u64s", .array(.uint64([1, .max])))
        w.set("floats", .array(.float32([0.5, 1]))); w.set("doubles", .array(.float64([0.1])))
        let f = try parseGGUF(try w.serialize())
        #expect(try f.uint("u16") == 49152)
        #expect(try f.int("u16") == 49152)
        #expect(try f.int("i8") == -3)
        #expect(try f.uint("big") == .max)
        #expect(try f.float("f32") == Float(1e-5))
        #expect(try f.double("f64") == 0.1)
        #expect(try f.float("f64") == Float(0.1))
        #expect(try f.bool("b"))
        #expect(try f.string("s") == "gpt2")
        #expect(try f.stringArray("toks") == ["a", "b"])
        #expect(try f.intArray("ints") == [-1, 2])
        #expect(try f.floatArray("floats") == [0.5, 1])
        #expect(try f.floatArray("doubles") == [Float(0.1)])
        #expect(try f.array("toks").count == 2)

        func kind(_ body: () throws -> Void) -> BatchCoreError.Kind? {
            do { try body(); return nil } catch let e as BatchCoreError { return e.kind } catch { return .internal }
        }
        #expect(kind { _ = try f.uint("missing") } == .notFound)
        #expect(kind { _ = try f.uint("i8") } == .format)       // negative
        #expect(kind { _ = try f.int("big") } == .format)       // does not fit Int
        #expect(kind { _ = try f.string("u16") } == .format)
        #expect(kind { _ = try f.float("s") } == .format)
        #expect(kind { _ = try f.bool("s") } == .format)
        #expect(kind { _ = try f.stringArray("ints") } == .format)
        #expect(kind { _ = try f.intArray("u64s") } == .format)  // .max does not fit Int
        #expect(kind { _ = try f.intArray("floats") } == .format)
        #expect(kind { _ = try f.floatArray("toks") } == .format)
        #expect(kind { _ = try f.tensorData("nope") } == .notFound)
    }

    @Test(arguments: [1, 8, 32, 64, 4096])
    func tensorsRoundTrip(alignment: Int) throws {
        var g = SystemRandomNumberGenerator()
        var w = GGUFWriter(alignment: alignment)
        let floats = (0..<60).map { _ in Float.random(in: -10...10, using: &g) }
        try w.addTensor(name: "a", dims: [5, 3, 2, 2], floats: floats)
        let specs: [(String, [Int], GGMLType)] = [
            ("h", [7], .f16), ("bf", [3, 3], .bf16), ("q8", [64, 3], .q8_0),
            ("q40", [32, 2, 2], .q4_0), ("q41", [96], .q4_1), ("q2k", [256], .q2_K), ("i32", [5], .i32),
        ]
        var raw: [String: [UInt8]] = [:]
        for (name, dims, type) in specs {
            let n = dims.reduce(1, *)
            let data = (0..<type.byteCount(elements: n)!).map { _ in UInt8.random(in: 0...255, using: &g) }
            raw[name] = data
            try w.addTensor(name: name, dims: dims, type: type, data: data)
        }
        let bytes = try w.serialize()
        #expect(bytes.count % alignment == 0)
        let f = try parseGGUF(bytes)
        #expect(f.alignment == alignment)
        #expect(f.dataOffset % alignment == 0)
        #expect(f.tensors.map(\.name) == ["a"] + specs.map(\.0))
        #expect(try f.dequantizeTensor("a") == floats)
        #expect(f.tensor(named: "a")?.dims == [5, 3, 2, 2])
        for (name, dims, type) in specs {
            let t = try #require(f.tensor(named: name))
            #expect(t.dims == dims && t.type == type && t.elementCount == dims.reduce(1, *))
            #expect(t.offset % alignment == 0)
            #expect(Array(try f.tensorData(name)) == raw[name]!)
        }
        #expect(throws: BatchCoreError(.unsupported, "GGUF: tensor q2k has type Q2_K, which cannot be dequantized")) {
            _ = try f.dequantizeTensor("q2k")
        }
    }

    @Test func fileRoundTripThroughPath() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("gguf-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        try w.addTensor(name: "x", dims: [4], floats: [1, 2, 3, 4])
        let path = dir.appendingPathComponent("m.gguf").path
        try w.write(to: path)
        #expect(try Array(Data(contentsOf: URL(fileURLWithPath: path))) == w.serialize())
        let f = try GGUFFile(path: path)
        #expect(try f.string("general.architecture") == "llama")
        #expect(try f.dequantizeTensor("x") == [1, 2, 3, 4])

        func kind(_ path: String) -> BatchCoreError.Kind? {
            do { _ = try GGUFFile(path: path); return nil } catch let e as BatchCoreError { return e.kind } catch { return .internal }
        }
        #expect(kind(dir.appendingPathComponent("missing.gguf").path) == .io)
        #expect(kind(dir.path) == .io)
        let empty = dir.appendingPathComponent("empty.gguf").path
        _ = FileManager.default.createFile(atPath: empty, contents: Data())
        #expect(kind(empty) == .format)
        let partial = dir.appendingPathComponent("partial.gguf").path
        _ = FileManager.default.createFile(atPath: partial, contents: Data(try w.serialize().dropLast(40)))
        #expect(kind(partial) == .format)
    }

    @Test func writerRejectsBadTensors() throws {
        var w = GGUFWriter()
        try w.addTensor(name: "x", dims: [2], floats: [1, 2])
        func kind(_ body: () throws -> Void) -> BatchCoreError.Kind? {
            do { try body(); return nil } catch let e as BatchCoreError { return e.kind } catch { return .internal }
        }
        #expect(kind { try w.addTensor(name: "x", dims: [2], floats: [1, 2]) } == .invalidArgument)
        #expect(kind { try w.addTensor(name: "y", dims: [3], floats: [1, 2]) } == .invalidArgument)
        #expect(kind { try w.addTensor(name: "y", dims: [], floats: []) } == .invalidArgument)
        #expect(kind { try w.addTensor(name: "y", dims: [1, 1, 1, 1, 1], floats: [1]) } == .invalidArgument)
        #expect(kind { try w.addTensor(name: "y", dims: [0], floats: []) } == .invalidArgument)
        #expect(kind { try w.addTensor(name: "y", dims: [16], type: .q8_0, data: []) } == .invalidArgument)
        #expect(kind { try w.addTensor(name: "y", dims: [1 << 40, 1 << 40], type: .f32, data: []) } == .invalidArgument)
        #expect(kind { try w.addTensor(name: "y", dims: [32], type: .q4_0_4_4, data: []) } == .invalidArgument)
        var bad = GGUFWriter(alignment: 24)
        #expect(kind { _ = try bad.serialize() } == .invalidArgument)
        bad.set("general.alignment", .uint32(16))
        #expect(try parseGGUF(bad.serialize()).alignment == 16)
    }

    @Test func typeTable() {
        #expect(GGMLType.q4_1.description == "Q4_1")
        #expect(GGMLType(rawValue: 30) == .bf16)
        #expect(GGMLType(rawValue: 4) == nil)
        #expect(GGMLType.q8_0.layout! == (32, 34))
        #expect(GGMLType.q4_0.layout! == (32, 18))
        #expect(GGMLType.q4_1.layout! == (32, 20))
        #expect(GGMLType.q6_K.layout! == (256, 210))
        #expect(GGMLType.q4_K.layout! == (256, 144))
        #expect(GGMLType.q8_0.byteCount(elements: 64) == 68)
        #expect(GGMLType.q8_0.byteCount(elements: 33) == nil)
        #expect(GGMLType.f32.byteCount(elements: Int.max) == nil)
    }
}

// MARK: - Dequantization

@Suite struct GGUFDequantizeTests {
    // Exact equality with a float64 reference is expected: each product q * d has at
    // most 8 (int8) or 4 (nibble) + 11 (half significand) significant bits, and half
    // values are >= 2^-24 in magnitude and < 2^16, so q * d is exact in float32 and in
    // double. For Q4_1, q * d + m: both terms are multiples of 2^-24 below 2^21, so the
    // sum is exact in double (<= 45 bits) and float32 rounds it once, exactly as
    // Float(reference) does. Half/bfloat16 to float32 is exact by construction.

    @Test(arguments: [GGMLType.q8_0, .q4_0, .q4_1])
    func blockFormatsMatchReference(type: GGMLType) throws {
        var g = SystemRandomNumberGenerator()
        let blocks = 2000
        let (bs, bpb) = type.layout!
        var data: [UInt8] = []
        for _ in 0..<blocks {
            data += le16(randomHalfBits(&g))
            if type == .q4_1 { data += le16(randomHalfBits(&g)) }
            let quants = bpb - (type == .q4_1 ? 4 : 2)
            data += (0..<quants).map { _ in UInt8.random(in: 0...255, using: &g) }
        }
        // Include extreme scales: largest/smallest normal, smallest subnormal, zero, -0.
        for (i, bits) in [UInt16(0x7BFF), 0xFBFF, 0x0400, 0x0001, 0x0000, 0x8000].enumerated() {
            data.replaceSubrange(i * bpb..<i * bpb + 2, with: le16(bits))
        }
        let count = blocks * bs
        var out = [Float](repeating: .nan, count: count)
        try data.withUnsafeBytes { src in
            try out.withUnsafeMutableBufferPointer { try dequantize(type: type, data: src, count: count, into: $0.baseAddress!) }
        }
        var mismatches = 0
        for b in 0..<blocks {
            let ref = refDequantize(type, data[b * bpb..<(b + 1) * bpb])
            for j in 0..<bs where Float(ref[j]) != out[b * bs + j] || (type != .q4_1 && Double(out[b * bs + j]) != ref[j]) {
                if mismatches < 5 { Issue.record("\(type) block \(b) element \(j): \(out[b * bs + j]) vs reference \(ref[j])") }
                mismatches += 1
            }
        }
        #expect(mismatches == 0)
    }

    @Test func halfAndBFloatMatchReference() throws {
        var g = SystemRandomNumberGenerator()
        let n = 50_000
        for type in [GGMLType.f16, .bf16] {
            var bits = (0..<n).map { _ in type == .f16 ? randomHalfBits(&g) : randomBF16Bits(&g) }
            bits[0] = 0x0001; bits[1] = 0x8000; bits[2] = 0x0000  // subnormal, -0, +0
            let data = bits.flatMap(le16)
            var out = [Float](repeating: .nan, count: n)
            try data.withUnsafeBytes { src in
                try out.withUnsafeMutableBufferPointer { try dequantize(type: type, data: src, count: n, into: $0.baseAddress!) }
            }
            var mismatches = 0
            for i in 0..<n {
                let ref = type == .f16 ? refHalf(bits[i]) : refBF16(bits[i])
                if Double(out[i]) != ref || out[i].sign != ref.sign { mismatches += 1 }
            }
            #expect(mismatches == 0, "\(type)")
            // Non-finite values pass through.
            let special: [UInt16] = type == .f16 ? [0x7C00, 0xFC00, 0x7E00] : [0x7F80, 0xFF80, 0x7FC0]
            var s = [Float](repeating: 0, count: 3)
            try special.flatMap(le16).withUnsafeBytes { src in
                try s.withUnsafeMutableBufferPointer { try dequantize(type: type, data: src, count: 3, into: $0.baseAddress!) }
            }
            #expect(s[0] == .infinity && s[1] == -.infinity && s[2].isNaN)
        }
    }

    @Test func f32IsCopied() throws {
        var g = SystemRandomNumberGenerator()
        let values = (0..<1001).map { _ in Float(bitPattern: UInt32.random(in: 0...UInt32.max, using: &g)) }
        let data = values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
        var out = [Float](repeating: 0, count: values.count + 1)
        // Unaligned source: start at byte 1.
        let shifted = [0] + data
        try shifted.withUnsafeBytes { src in
            try out.withUnsafeMutableBufferPointer {
                try dequantize(type: .f32, data: UnsafeRawBufferPointer(rebasing: src[1...]), count: values.count, into: $0.baseAddress!)
            }
        }
        #expect(zip(values, out).allSatisfy { $0.bitPattern == $1.bitPattern })
        #expect(out[values.count] == 0)  // nothing written past count
    }

    @Test func rejectsBadArguments() throws {
        var out = [Float](repeating: 0, count: 64)
        let data = [UInt8](repeating: 0, count: 40)
        func kind(_ type: GGMLType, _ count: Int, _ bytes: Int) -> BatchCoreError.Kind? {
            data.withUnsafeBytes { src in
                out.withUnsafeMutableBufferPointer { dst in
                    do {
                        try dequantize(type: type, data: UnsafeRawBufferPointer(rebasing: src[0..<bytes]), count: count, into: dst.baseAddress!)
                        return nil
                    } catch let e as BatchCoreError { return e.kind } catch { return .internal }
                }
            }
        }
        #expect(kind(.q8_0, 32, 34) == nil)
        #expect(kind(.q8_0, 0, 0) == nil)
        #expect(kind(.q8_0, 33, 40) == .invalidArgument)  // not a whole block
        #expect(kind(.q8_0, 64, 40) == .invalidArgument)  // data too short
        #expect(kind(.q4_1, 32, 19) == .invalidArgument)
        #expect(kind(.f32, -1, 40) == .invalidArgument)
        #expect(kind(.f32, 11, 40) == .invalidArgument)
        #expect(kind(.q2_K, 256, 40) == .unsupported)
        #expect(kind(.iq4_NL, 32, 18) == .unsupported)
        #expect(kind(.q4_K, 256, 40) == .invalidArgument)  // 144 bytes needed
        #expect(kind(.q6_K, 255, 40) == .invalidArgument)
    }
}

// MARK: - Hostile and corrupted files

@Suite(.serialized) struct GGUFFuzzTests {
    @Test func truncationAtEveryLengthIsRejected() throws {
        let bytes = try sampleFile()
        let full = try parseGGUF(bytes)
        let end = full.tensors.map { full.dataOffset + $0.offset + $0.byteCount }.max()!
        #expect(bytes.count < 4096)
        for n in 0..<bytes.count {
            let outcome = attempt(Array(bytes[0..<n]), "truncated to \(n)")
            if n < end {
                #expect(outcome == .rejected(.format), "truncated to \(n) of \(bytes.count)")
            } else {
                #expect(outcome == .parsed, "truncated to \(n): only trailing padding removed")
            }
        }
    }

    @Test func randomBitFlipsNeverCrash() throws {
        let bytes = try sampleFile()
        let headerEnd = try parseGGUF(bytes).dataOffset
        var g = SystemRandomNumberGenerator()
        var parsed = 0, rejected = 0
        for variant in 0..<800 {
            var b = bytes
            var flips: [(Int, Int)] = []
            for _ in 0..<Int.random(in: 1...4, using: &g) {
                // Half the variants only touch the header/metadata/tensor infos.
                let limit = variant % 2 == 0 ? headerEnd : b.count
                let at = Int.random(in: 0..<limit, using: &g), bit = Int.random(in: 0..<8, using: &g)
                b[at] ^= UInt8(1 << bit)
                flips.append((at, bit))
            }
            switch attempt(b, "bit flips \(flips)") {
            case .parsed: parsed += 1
            case .rejected(let kind):
                rejected += 1
                #expect(kind == .format, "bit flips \(flips)")
            }
        }
        #expect(parsed + rejected == 800)
        #expect(rejected > 0)
    }

    /// Overwrites every 8-byte and 4-byte window of the header, metadata and tensor
    /// infos with huge values: whichever count, length, dim or offset sits there must
    /// be rejected (or be harmless) without crashing or allocating by the count.
    @Test func inflatedFieldsAtEveryPosition() throws {
        let bytes = try sampleFile()
        let headerEnd = try parseGGUF(bytes).dataOffset
        let rssBefore = currentMaxRSSBytes()
        let huge64: [UInt64] = [1 << 62, 1 << 40, .max, 1 << 63, 1 << 32 + 1, UInt64(Int.max)]
        let huge32: [UInt32] = [99, .max, 1 << 31, 5]
        var variants = 0
        for at in 0..<headerEnd {
            for v in huge64 where at + 8 <= bytes.count {
                var b = bytes
                withUnsafeBytes(of: v.littleEndian) { b.replaceSubrange(at..<at + 8, with: $0) }
                if case .rejected(let kind) = attempt(b, "u64 \(v) at \(at)") { #expect(kind == .format, "u64 \(v) at \(at)") }
                variants += 1
            }
            for v in huge32 where at + 4 <= bytes.count {
                var b = bytes
                withUnsafeBytes(of: v.littleEndian) { b.replaceSubrange(at..<at + 4, with: $0) }
                if case .rejected(let kind) = attempt(b, "u32 \(v) at \(at)") { #expect(kind == .format, "u32 \(v) at \(at)") }
                variants += 1
            }
        }
        #expect(variants > 5000)
        let growth = currentMaxRSSBytes() - rssBefore
        #expect(growth < 512 << 20, "peak RSS grew by \(growth) bytes")
    }

    /// Hand-made hostile files; each must be rejected with a format error.
    @Test func hostileFilesAreRejected() throws {
        var cases: [(String, [UInt8])] = []
        func add(_ name: String, _ build: (inout Raw) -> Void) {
            var r = Raw()
            build(&r)
            cases.append((name, r.bytes))
        }
        /// One kv with key "k" of `type`, whose value bytes `value` writes.
        func kv(_ name: String, type: UInt32, _ value: @escaping (inout Raw) -> Void) {
            add(name) { r in
                r.header(tensors: 0, kvs: 1); r.str("k"); r.u32(type); value(&r); r.zeros(64)
            }
        }
        /// One F32-capable tensor info plus a little data.
        func tensor(_ name: String, dims: [UInt64], type: UInt32 = 0, offset: UInt64 = 0, nDims: UInt32? = nil,
                    dataBytes: Int = 64) {
            add(name) { r in
                r.header(tensors: 1, kvs: 0); r.tensorInfo("t", dims: dims, type: type, offset: offset, nDims: nDims)
                r.pad(); r.zeros(dataBytes)
            }
        }

        add("bad magic") { r in r.bytes = Array("GGUG".utf8); r.u32(3); r.u64(0); r.u64(0) }
        for v: UInt32 in [0, 1, 4, 0x0300_0000, .max] { add("version \(v)") { r in r.header(version: v, tensors: 0, kvs: 0) } }
        add("header only 20 bytes") { r in r.header(tensors: 0, kvs: 0); r.bytes.removeLast(4) }
        add("tensor count 1, info all zero") { r in r.header(tensors: 1, kvs: 0); r.zeros(100) }
        for n: UInt64 in [8, 1 << 40, 1 << 62, .max] {
            add("tensor count \(n)") { r in r.header(tensors: n, kvs: 0); r.zeros(100) }
            add("kv count \(n)") { r in r.header(tensors: 0, kvs: n); r.zeros(100) }
        }
        add("key length 2^62") { r in r.header(tensors: 0, kvs: 1); r.u64(1 << 62); r.zeros(64) }
        add("key length max") { r in r.header(tensors: 0, kvs: 1); r.u64(.max); r.zeros(64) }
        add("key not UTF-8") { r in r.header(tensors: 0, kvs: 1); r.u64(2); r.u8(0xC3); r.u8(0x28); r.u32(0); r.u8(1) }
        add("duplicate key") { r in r.header(tensors: 0, kvs: 2); for _ in 0..<2 { r.str("k"); r.u32(0); r.u8(1) } }
        kv("string length 2^62", type: 8) { $0.u64(1 << 62) }
        kv("string length max", type: 8) { $0.u64(.max) }
        kv("string length 65", type: 8) { $0.u64(65) }
        kv("value type 13", type: 13) { $0.u8(0) }
        kv("value type max", type: .max) { $0.u8(0) }
        kv("bool 2", type: 7) { $0.u8(2) }
        let arrayCounts: [(UInt32, UInt64)] = [
            (0, 1 << 62), (10, 1 << 61), (10, 1 << 40), (12, UInt64.max), (8, 1 << 40),
            (9, 1 << 40), (9, UInt64.max), (7, 1 << 62), (2, 1 << 63), (4, 33),
        ]
        for (t, n) in arrayCounts {
            kv("array of \(n) type \(t)", type: 9) { r in r.u32(t); r.u64(n) }
        }
        kv("array element type 13", type: 9) { r in r.u32(13); r.u64(1) }
        kv("array of bool 3", type: 9) { r in r.u32(7); r.u64(2); r.u8(1); r.u8(3) }
        kv("array of strings, one huge", type: 9) { r in r.u32(8); r.u64(2); r.str("ok"); r.u64(1 << 62) }
        kv("nested array, inner count huge", type: 9) { r in r.u32(9); r.u64(1); r.u32(0); r.u64(1 << 50) }
        add("arrays nested 100000 deep") { r in
            r.header(tensors: 0, kvs: 1); r.str("k"); r.u32(9)
            for _ in 0..<100_000 { r.u32(9); r.u64(1) }
            r.u32(0); r.u64(0)
        }
        for (name, value) in [("alignment 0", GGUFValue.uint32(0)), ("alignment 3", .uint32(3)),
                              ("alignment 2^31", .uint32(1 << 31)), ("alignment as uint64", .uint64(32)),
                              ("alignment as string", .string("32"))] {
            // serialize() refuses bad alignments, so write the metadata by hand.
            var r = Raw()
            r.header(tensors: 0, kvs: 1); r.str("general.alignment"); r.u32(value.type.rawValue)
            switch value {
            case .uint32(let v): r.u32(v)
            case .uint64(let v): r.u64(v)
            case .string(let s): r.str(s)
            default: break
            }
            cases.append((name, r.bytes))
        }
        tensor("n_dims 0", dims: [], nDims: 0)
        tensor("n_dims 5", dims: [1, 1, 1, 1, 1])
        tensor("n_dims 99", dims: [4], nDims: 99)
        tensor("n_dims max", dims: [4], nDims: .max)
        tensor("dim 0", dims: [4, 0])
        tensor("dim 2^63", dims: [1 << 63])
        tensor("dim max", dims: [.max])
        tensor("dims overflow 2^32 * 2^32", dims: [1 << 32, 1 << 32])
        tensor("dims overflow 4 x 2^16", dims: [1 << 16, 1 << 16, 1 << 16, 1 << 16])
        tensor("bytes overflow 2^62 f32", dims: [1 << 62])
        tensor("q8_0 with 2^62 elements", dims: [1 << 61, 2], type: 8)
        tensor("q8_0 byte size overflow", dims: [1 << 62], type: 8)
        tensor("tensor larger than file", dims: [1 << 20])
        tensor("type 77", dims: [4], type: 77)
        tensor("type max", dims: [4], type: .max)
        tensor("type 4 (removed)", dims: [32], type: 4)
        tensor("type Q4_0_4_4 (not in files)", dims: [32], type: 31)
        tensor("Q4_0 row not a block multiple", dims: [33], type: 2)
        tensor("offset 2^62", dims: [4], offset: 1 << 62)
        tensor("offset near max", dims: [4], offset: UInt64.max - 31)
        tensor("offset unaligned", dims: [4], offset: 4)
        tensor("offset just past end", dims: [4], offset: 64)
        tensor("data truncated", dims: [17])
        add("tensor name length 2^62") { r in r.header(tensors: 1, kvs: 0); r.u64(1 << 62); r.zeros(64) }
        add("duplicate tensor names") { r in
            r.header(tensors: 2, kvs: 0)
            r.tensorInfo("t", dims: [4], type: 0, offset: 0); r.tensorInfo("t", dims: [4], type: 0, offset: 32)
            r.pad(); r.zeros(64)
        }
        add("overlapping tensors") { r in
            r.header(tensors: 2, kvs: 0)
            r.tensorInfo("a", dims: [16], type: 0, offset: 0); r.tensorInfo("b", dims: [4], type: 0, offset: 32)
            r.pad(); r.zeros(128)
        }
        add("tensor infos truncated") { r in
            r.header(tensors: 2, kvs: 0)
            r.tensorInfo(String(repeating: "a", count: 40), dims: [4], type: 0, offset: 0); r.str("b"); r.u32(1)
        }
        add("data section missing") { r in r.header(tensors: 1, kvs: 0); r.tensorInfo("a", dims: [4], type: 0, offset: 0) }

        let rssBefore = currentMaxRSSBytes()
        for (name, bytes) in cases {
            #expect(attempt(bytes, name) == .rejected(.format), "\(name)")
        }
        let growth = currentMaxRSSBytes() - rssBefore
        #expect(growth < 256 << 20, "peak RSS grew by \(growth) bytes")

        // Control: the same builders produce parseable files when the fields are sane.
        var ok = Raw()
        ok.header(tensors: 2, kvs: 1); ok.str("general.alignment"); ok.u32(4); ok.u32(16)
        ok.tensorInfo("a", dims: [4], type: 0, offset: 0); ok.tensorInfo("b", dims: [32], type: 8, offset: 16)
        ok.pad(to: 16); ok.zeros(16 + 34)
        let f = try parseGGUF(ok.bytes)
        #expect(f.tensors.map(\.byteCount) == [16, 34] && f.alignment == 16)
        var v2 = Raw()
        v2.header(version: 2, tensors: 0, kvs: 1); v2.str("k"); v2.u32(8); v2.str("v")
        #expect(try parseGGUF(v2.bytes).string("k") == "v")
    }
}

// MARK: - Real model

private let smolLMPath = (ProcessInfo.processInfo.environment["HOME"] ?? "/root")
    + "/.cache/batchcore/SmolLM2-135M-Instruct.Q4_1.gguf"

@Suite struct GGUFModelTests {
    @Test(.enabled(if: FileManager.default.fileExists(atPath: smolLMPath), "SmolLM2 GGUF not in ~/.cache/batchcore"))
    func smolLM2() throws {
        let f = try GGUFFile(path: smolLMPath)
        #expect(f.version == 3)
        #expect(try f.string("general.architecture") == "llama")
        #expect(try f.int("llama.block_count") == 30)
        #expect(try f.int("llama.embedding_length") == 576)
        #expect(try f.int("llama.attention.head_count") == 9)
        #expect(try f.int("llama.attention.head_count_kv") == 3)
        #expect(try f.float("llama.attention.layer_norm_rms_epsilon") == Float(1e-5))
        let tokens = try f.stringArray("tokenizer.ggml.tokens")
        #expect(tokens.count == 49152)
        #expect(tokens[1] == "<|im_start|>" && tokens[2] == "<|im_end|>")
        #expect(try f.intArray("tokenizer.ggml.token_type").count == 49152)
        #expect(try f.stringArray("tokenizer.ggml.merges").count > 40_000)
        #expect(f.tensors.count == 272)
        #expect(f.tensors.filter { $0.type == .q4_1 }.count == 210)

        for (name, type, dims) in [("blk.0.ffn_down.weight", GGMLType.q4_1, [1536, 576]),
                                   ("token_embd.weight", .q8_0, [576, 49152])] {
            let t = try #require(f.tensor(named: name))
            #expect(t.type == type && t.dims == dims)
            let data = try f.tensorData(name)
            let values = try f.dequantizeTensor(name)
            #expect(values.count == dims.reduce(1, *))
            #expect(values.allSatisfy { $0.isFinite })
            let meanAbs = values.reduce(0.0) { $0 + Double(abs($1)) } / Double(values.count)
            #expect(meanAbs > 1e-4 && meanAbs < 1, "\(name) mean |w| = \(meanAbs)")
            // Spot-check blocks against the float64 reference.
            let (bs, bpb) = type.layout!
            for b in [0, 1, values.count / bs / 2, values.count / bs - 1] {
                let ref = refDequantize(type, Array(data[b * bpb..<(b + 1) * bpb])[...])
                for j in 0..<bs { #expect(values[b * bs + j] == Float(ref[j]), "\(name) block \(b)[\(j)]") }
            }
        }
        let norm = try f.dequantizeTensor("blk.0.attn_norm.weight")
        #expect(norm.count == 576 && norm.allSatisfy { $0.isFinite && $0 != 0 })
    }
}
