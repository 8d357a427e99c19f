import BCCore
#if canImport(Glibc)
import Glibc
#endif

/// Builds a GGUF v3 file: metadata of any type, tensors given as raw bytes in their
/// ggml layout, each tensor's data padded to the alignment (as ggml's writer does).
///
/// The alignment is the metadata key general.alignment (uint32) when set, else 32;
/// `init(alignment:)` sets that key for alignments other than 32.
package struct GGUFWriter {
    package private(set) var metadataKeys: [String] = []
    package private(set) var metadata: [String: GGUFValue] = [:]
    package private(set) var tensors: [GGUFTensorInfo] = []
    private var tensorData: [[UInt8]] = []
    private var dataSize = 0

    package init(alignment: Int = 32) {
        if alignment != GGUFParser.defaultAlignment, let a = UInt32(exactly: alignment) {
            set("general.alignment", .uint32(a))
        } else if alignment != GGUFParser.defaultAlignment {
            set("general.alignment", .uint64(UInt64(truncatingIfNeeded: alignment)))  // rejected by serialize()
        }
    }

    /// The alignment `serialize()` uses; throws if general.alignment is not a power-of-two uint32.
    package func alignment() throws -> Int {
        guard let v = metadata["general.alignment"] else { return GGUFParser.defaultAlignment }
        guard case .uint32(let a) = v, a > 0, a & (a - 1) == 0, Int(a) <= GGUFParser.maxAlignment else {
            throw BatchCoreError.invalid("GGUFWriter: general.alignment must be a power-of-two uint32, got \(v)")
        }
        return Int(a)
    }

    /// Sets metadata `key`; a new key goes last, an existing one keeps its place.
    package mutating func set(_ key: String, _ value: GGUFValue) {
        if metadata.updateValue(value, forKey: key) == nil { metadataKeys.append(key) }
    }

    /// Adds a tensor whose `data` is `dims` elements of `type` in ggml's layout
    /// (dims[0] fastest). Offsets are assigned when serialized.
    package mutating func addTensor(name: String, dims: [Int], type: GGMLType, data: [UInt8]) throws {
        guard !tensors.contains(where: { $0.name == name }) else {
            throw BatchCoreError.invalid("GGUFWriter: duplicate tensor name \(name)")
        }
        guard (1...GGUFParser.maxDims).contains(dims.count), dims.allSatisfy({ $0 > 0 }) else {
            throw BatchCoreError.invalid("GGUFWriter: tensor \(name) dims \(dims) must be 1...4 positive values")
        }
        guard let (blockSize, _) = type.layout else {
            throw BatchCoreError.invalid("GGUFWriter: type \(type) cannot be stored in GGUF")
        }
        var count = 1
        for d in dims {
            let (p, o) = count.multipliedReportingOverflow(by: d)
            guard !o else { throw BatchCoreError.invalid("GGUFWriter: tensor \(name) dims \(dims) overflow") }
            count = p
        }
        guard dims[0] % blockSize == 0, let size = type.byteCount(elements: count) else {
            throw BatchCoreError.invalid("GGUFWriter: tensor \(name) row length \(dims[0]) is not a multiple of the \(type) block size \(blockSize)")
        }
        guard data.count == size else {
            throw BatchCoreError.invalid("GGUFWriter: tensor \(name) needs \(size) bytes of \(type), got \(data.count)")
        }
        tensors.append(GGUFTensorInfo(name: name, dims: dims, type: type, offset: 0, elementCount: count, byteCount: size))
        tensorData.append(data)
    }

    /// Adds an F32 tensor from float values.
    package mutating func addTensor(name: String, dims: [Int], floats: [Float]) throws {
        var bytes = [UInt8](repeating: 0, count: floats.count * 4)
        bytes.withUnsafeMutableBytes { dst in
            for (i, f) in floats.enumerated() {
                dst.storeBytes(of: f.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self)
            }
        }
        try addTensor(name: name, dims: dims, type: .f32, data: bytes)
    }

    /// The whole file in memory.
    package func serialize() throws -> [UInt8] {
        var out: [UInt8] = []
        try emit { out.append(contentsOf: $0) }
        return out
    }

    /// Writes the file to `path` (through a temporary file renamed into place).
    package func write(to path: String) throws {
        try writeAtomically(path) { sink in try emit(sink) }
    }

    /// Hands the file to `sink` in order: header, metadata, tensor infos, padding, data.
    private func emit(_ sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        let alignment = try alignment()
        func padding(_ n: Int) -> Int { (alignment - n % alignment) % alignment }

        var w = ByteWriter()
        w.raw(GGUFParser.magic)
        w.u32(3)
        w.u64(UInt64(tensors.count))
        w.u64(UInt64(metadataKeys.count))
        for key in metadataKeys {
            Self.string(&w, key)
            let value = metadata[key]!
            w.u32(value.type.rawValue)
            Self.value(&w, value)
        }
        var offset = 0
        for t in tensors {
            Self.string(&w, t.name)
            w.u32(UInt32(t.dims.count))
            for d in t.dims { w.u64(UInt64(d)) }
            w.u32(t.type.rawValue)
            w.u64(UInt64(offset))
            offset += t.byteCount + padding(t.byteCount)
        }
        w.raw([UInt8](repeating: 0, count: padding(w.bytes.count)))
        try w.bytes.withUnsafeBytes(sink)
        let zeros = [UInt8](repeating: 0, count: alignment)
        for data in tensorData {
            try data.withUnsafeBytes(sink)
            let pad = padding(data.count)
            if pad > 0 { try zeros.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0..<pad])) } }
        }
    }

    private static func string(_ w: inout ByteWriter, _ s: String) {
        let utf8 = Array(s.utf8)
        w.u64(UInt64(utf8.count))
        w.raw(utf8)
    }

    private static func u16(_ w: inout ByteWriter, _ v: UInt16) {
        w.u8(UInt8(truncatingIfNeeded: v))
        w.u8(UInt8(truncatingIfNeeded: v >> 8))
    }

    private static func value(_ w: inout ByteWriter, _ value: GGUFValue) {
        switch value {
        case .uint8(let v): w.u8(v)
        case .int8(let v): w.u8(UInt8(bitPattern: v))
        case .uint16(let v): u16(&w, v)
        case .int16(let v): u16(&w, UInt16(bitPattern: v))
        case .uint32(let v): w.u32(v)
        case .int32(let v): w.u32(UInt32(bitPattern: v))
        case .float32(let v): w.u32(v.bitPattern)
        case .bool(let v): w.u8(v ? 1 : 0)
        case .string(let v): string(&w, v)
        case .array(let a): array(&w, a)
        case .uint64(let v): w.u64(v)
        case .int64(let v): w.i64(v)
        case .float64(let v): w.f64(v)
        }
    }

    private static func array(_ w: inout ByteWriter, _ a: GGUFArray) {
        w.u32(a.elementType.rawValue)
        w.u64(UInt64(a.count))
        switch a {
        case .uint8(let v): w.raw(v)
        case .int8(let v): for x in v { w.u8(UInt8(bitPattern: x)) }
        case .uint16(let v): for x in v { u16(&w, x) }
        case .int16(let v): for x in v { u16(&w, UInt16(bitPattern: x)) }
        case .uint32(let v): for x in v { w.u32(x) }
        case .int32(let v): for x in v { w.u32(UInt32(bitPattern: x)) }
        case .float32(let v): for x in v { w.u32(x.bitPattern) }
        case .bool(let v): for x in v { w.u8(x ? 1 : 0) }
        case .string(let v): for x in v { string(&w, x) }
        case .array(let v): for x in v { array(&w, x) }
        case .uint64(let v): for x in v { w.u64(x) }
        case .int64(let v): for x in v { w.i64(x) }
        case .float64(let v): for x in v { w.f64(x) }
        }
    }
}
