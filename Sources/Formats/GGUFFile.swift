import BCCore
#if canImport(Glibc)
import Glibc
#endif

/// One tensor of a GGUF file.
package struct GGUFTensorInfo: Equatable, Sendable {
    package let name: String
    /// ggml order: dims[0] is the fastest-varying (row length), as stored in the file.
    package let dims: [Int]
    package let type: GGMLType
    /// Byte offset of the data relative to the file's data section (`GGUFFile.dataOffset`).
    package let offset: Int
    /// Product of `dims`.
    package let elementCount: Int
    /// Bytes of data: elementCount / blockSize * bytesPerBlock.
    package let byteCount: Int
}

/// A GGUF (v2 or v3) file: metadata, tensor infos and a view of the tensor data.
///
/// `GGUFFile(path:)` maps the file read-only and unmaps it when the object is
/// released; `GGUFFile(bytes:)` copies the bytes into an owned buffer. Everything
/// read from the file is validated before use: a truncated or hostile file throws
/// `BatchCoreError` of kind `.format` and never reads outside the file or allocates
/// memory out of proportion to the file's size. Buffers returned by `tensorData`
/// stay valid as long as this object is alive. (As with any mmap, a file truncated
/// by another process while mapped can still fault on access.)
package final class GGUFFile: @unchecked Sendable {
    /// Format version from the header (2 or 3).
    package let version: UInt32
    /// Metadata keys in file order.
    package let metadataKeys: [String]
    package let metadata: [String: GGUFValue]
    /// Tensors in file order.
    package let tensors: [GGUFTensorInfo]
    /// Data alignment: general.alignment, or 32.
    package let alignment: Int
    /// File offset of the data section (tensor offsets are relative to it).
    package let dataOffset: Int
    /// The whole file.
    package let bytes: UnsafeRawBufferPointer

    private let tensorIndex: [String: Int]
    private let release: () -> Void

    /// Opens and validates the GGUF file at `path`, mapping it read-only.
    package convenience init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BatchCoreError.io("cannot open \(path): \(errnoString())") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw BatchCoreError.io("cannot stat \(path): \(errnoString())") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw BatchCoreError.io("\(path) is not a regular file") }
        let size = Int(st.st_size)
        guard size >= GGUFParser.headerSize else {
            throw BatchCoreError.format("\(path): \(size) bytes is too small to be a GGUF file")
        }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0),
              mapped != UnsafeMutableRawPointer(bitPattern: -1)
        else { throw BatchCoreError.io("cannot map \(path): \(errnoString())") }
        let buffer = UnsafeRawBufferPointer(start: mapped, count: size)
        let parsed: GGUFParser.Parsed
        do {
            parsed = try GGUFParser.parse(buffer, name: path)
        } catch {
            munmap(mapped, size)
            throw error
        }
        self.init(parsed, buffer, release: { _ = munmap(mapped, size) })
    }

    /// Validates GGUF data held in memory; the bytes are copied.
    package convenience init(bytes source: UnsafeRawBufferPointer) throws {
        let storage = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(source.count, 1), alignment: 64)
        if let base = source.baseAddress, source.count > 0 {
            storage.copyMemory(from: base, byteCount: source.count)
        }
        let buffer = UnsafeRawBufferPointer(start: storage, count: source.count)
        let parsed: GGUFParser.Parsed
        do {
            parsed = try GGUFParser.parse(buffer, name: "GGUF data")
        } catch {
            storage.deallocate()
            throw error
        }
        self.init(parsed, buffer, release: { storage.deallocate() })
    }

    private init(_ parsed: GGUFParser.Parsed, _ bytes: UnsafeRawBufferPointer, release: @escaping () -> Void) {
        version = parsed.version
        metadataKeys = parsed.keys
        metadata = parsed.metadata
        tensors = parsed.tensors
        alignment = parsed.alignment
        dataOffset = parsed.dataOffset
        self.bytes = bytes
        self.release = release
        var index: [String: Int] = [:]
        for (i, t) in parsed.tensors.enumerated() { index[t.name] = i }
        tensorIndex = index
    }

    deinit { release() }

    // MARK: Metadata

    package func value(_ key: String) -> GGUFValue? { metadata[key] }

    private func require(_ key: String) throws -> GGUFValue {
        guard let v = metadata[key] else { throw BatchCoreError(.notFound, "GGUF: no metadata key \(key)") }
        return v
    }

    private func mismatch(_ key: String, _ v: GGUFValue, _ expected: String) -> BatchCoreError {
        let type = v.arrayValue.map { "array of \($0.elementType)" } ?? "\(v.type)"
        return BatchCoreError.format("GGUF: metadata \(key) is \(type), expected \(expected)")
    }

    /// A non-negative integer of any integer type.
    package func uint(_ key: String) throws -> UInt64 {
        let v = try require(key)
        guard let u = v.uintValue else { throw mismatch(key, v, "a non-negative integer") }
        return u
    }

    /// An integer of any integer type that fits in Int.
    package func int(_ key: String) throws -> Int {
        let v = try require(key)
        guard let i = v.intValue else { throw mismatch(key, v, "an integer") }
        return i
    }

    /// A float32 (exact) or float64 (rounded to nearest).
    package func float(_ key: String) throws -> Float {
        let v = try require(key)
        guard let d = v.doubleValue else { throw mismatch(key, v, "a float") }
        return Float(d)
    }

    /// A float32 or float64, exactly.
    package func double(_ key: String) throws -> Double {
        let v = try require(key)
        guard let d = v.doubleValue else { throw mismatch(key, v, "a float") }
        return d
    }

    package func bool(_ key: String) throws -> Bool {
        let v = try require(key)
        guard let b = v.boolValue else { throw mismatch(key, v, "a bool") }
        return b
    }

    package func string(_ key: String) throws -> String {
        let v = try require(key)
        guard let s = v.stringValue else { throw mismatch(key, v, "a string") }
        return s
    }

    package func array(_ key: String) throws -> GGUFArray {
        let v = try require(key)
        guard let a = v.arrayValue else { throw mismatch(key, v, "an array") }
        return a
    }

    package func stringArray(_ key: String) throws -> [String] {
        let v = try require(key)
        guard let a = v.arrayValue?.stringValues else { throw mismatch(key, v, "an array of strings") }
        return a
    }

    /// An array of any integer element type whose elements all fit in Int.
    package func intArray(_ key: String) throws -> [Int] {
        let v = try require(key)
        guard let a = v.arrayValue?.intValues else { throw mismatch(key, v, "an array of integers") }
        return a
    }

    /// An array of float32 (exact) or float64 (rounded) elements.
    package func floatArray(_ key: String) throws -> [Float] {
        let v = try require(key)
        guard let a = v.arrayValue?.floatValues else { throw mismatch(key, v, "an array of floats") }
        return a
    }

    // MARK: Tensors

    package func tensor(named name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// The raw bytes of tensor `name` (valid while this object is alive).
    package func tensorData(_ name: String) throws -> UnsafeRawBufferPointer {
        guard let t = tensor(named: name) else { throw BatchCoreError(.notFound, "GGUF: no tensor \(name)") }
        let start = dataOffset + t.offset  // validated at open: inside the file
        return UnsafeRawBufferPointer(rebasing: bytes[start..<start + t.byteCount])
    }

    /// Tensor `name` converted to float32 (see `dequantize(type:data:count:into:)`).
    package func dequantizeTensor(_ name: String) throws -> [Float] {
        guard let t = tensor(named: name) else { throw BatchCoreError(.notFound, "GGUF: no tensor \(name)") }
        guard t.type.canDequantize else {
            throw BatchCoreError(.unsupported, "GGUF: tensor \(name) has type \(t.type), which cannot be dequantized")
        }
        let data = try tensorData(name)
        var out = [Float](repeating: 0, count: t.elementCount)
        try out.withUnsafeMutableBufferPointer { try dequantize(type: t.type, data: data, count: t.elementCount, into: $0.baseAddress!) }
        return out
    }
}

private func errnoString() -> String { String(cString: strerror(errno)) }

/// The GGUF parser: a pure function of the bytes.
enum GGUFParser {
    static let magic: [UInt8] = Array("GGUF".utf8)
    static let headerSize = 24  // magic, u32 version, u64 tensor count, u64 kv count
    static let maxDims = 4
    /// Deepest nesting of arrays accepted (bounds recursion on hostile input).
    static let maxArrayDepth = 16
    static let defaultAlignment = 32
    static let maxAlignment = 1 << 30
    /// Largest up-front reservation for a count read from the file; longer arrays grow
    /// as their elements are actually read.
    static let reserveLimit = 1 << 16

    struct Parsed {
        var version: UInt32
        var keys: [String]
        var metadata: [String: GGUFValue]
        var tensors: [GGUFTensorInfo]
        var alignment: Int
        var dataOffset: Int
    }

    static func parse(_ bytes: UnsafeRawBufferPointer, name: String) throws -> Parsed {
        var r = ByteReader(bytes, what: name)
        func fail(_ message: String) -> BatchCoreError { BatchCoreError.format("\(name): \(message)") }

        guard bytes.count >= 4, Array(bytes[0..<4]) == magic else { throw fail("not a GGUF file (bad magic)") }
        _ = try r.raw(4)
        let version = try r.u32()
        guard version == 2 || version == 3 else {
            if version == 1 { throw fail("GGUF version 1 is not supported (only 2 and 3)") }
            if version.byteSwapped == 2 || version.byteSwapped == 3 {
                throw fail("big-endian GGUF files are not supported")
            }
            throw fail("unsupported GGUF version \(version)")
        }
        let tensorCount64 = try r.u64()
        let kvCount64 = try r.u64()
        // Each key/value takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor
        // info at least 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset).
        let minKV = 13, minTensor = 32
        guard kvCount64 <= UInt64(r.remaining / minKV) else {
            throw fail("metadata count \(kvCount64) exceeds what \(r.remaining) remaining bytes can hold")
        }
        guard tensorCount64 <= UInt64(r.remaining / minTensor) else {
            throw fail("tensor count \(tensorCount64) exceeds what \(r.remaining) remaining bytes can hold")
        }
        let kvCount = Int(kvCount64), tensorCount = Int(tensorCount64)

        var keys: [String] = []
        var metadata: [String: GGUFValue] = [:]
        keys.reserveCapacity(Swift.min(kvCount, reserveLimit))
        for i in 0..<kvCount {
            let key = try readString(&r, fail, what: "metadata key \(i)")
            let rawType = try r.u32()
            guard let type = GGUFValueType(rawValue: rawType) else {
                throw fail("metadata \(key) has unknown value type \(rawType)")
            }
            let value = try readValue(&r, type, fail, key: key)
            guard metadata.updateValue(value, forKey: key) == nil else { throw fail("duplicate metadata key \(key)") }
            keys.append(key)
        }

        var alignment = defaultAlignment
        if let a = metadata["general.alignment"] {
            guard case .uint32(let v) = a else { throw fail("general.alignment is \(a.type), expected uint32") }
            guard v > 0, v & (v - 1) == 0, Int(v) <= maxAlignment else {
                throw fail("general.alignment \(v) is not a power of two in 1...\(maxAlignment)")
            }
            alignment = Int(v)
        }

        var infos: [(name: String, dims: [Int], type: GGMLType, offset: UInt64)] = []
        infos.reserveCapacity(Swift.min(tensorCount, reserveLimit))
        var seen = Set<String>()
        for i in 0..<tensorCount {
            let tname = try readString(&r, fail, what: "tensor \(i) name")
            guard seen.insert(tname).inserted else { throw fail("duplicate tensor name \(tname)") }
            let nDims = try r.u32()
            guard nDims >= 1, nDims <= UInt32(maxDims) else {
                throw fail("tensor \(tname) has \(nDims) dimensions (1...\(maxDims) allowed)")
            }
            var dims: [Int] = []
            dims.reserveCapacity(Int(nDims))
            for _ in 0..<Int(nDims) {
                let d = try r.u64()
                guard d > 0, d <= UInt64(Int.max) else { throw fail("tensor \(tname) has dimension \(d)") }
                dims.append(Int(d))
            }
            let rawType = try r.u32()
            guard let type = GGMLType(rawValue: rawType) else { throw fail("tensor \(tname) has unknown ggml type \(rawType)") }
            let offset = try r.u64()
            infos.append((tname, dims, type, offset))
        }

        // The data section starts at the next multiple of the alignment.
        let (padded, overflow) = r.offset.addingReportingOverflow(alignment - 1)
        guard !overflow else { throw fail("data offset overflows") }
        var dataOffset = padded / alignment * alignment
        if dataOffset > bytes.count {
            // A file without tensors may end before the padding.
            guard infos.isEmpty else {
                throw fail("truncated before the data section (at \(dataOffset), file has \(bytes.count) bytes)")
            }
            dataOffset = bytes.count
        }
        let dataSize = bytes.count - dataOffset

        var tensors: [GGUFTensorInfo] = []
        tensors.reserveCapacity(infos.count)
        for info in infos {
            let tname = info.name
            guard let (blockSize, _) = info.type.layout else {
                throw fail("tensor \(tname) has type \(info.type), which is not valid in GGUF files")
            }
            var count = 1
            for d in info.dims {
                let (p, o) = count.multipliedReportingOverflow(by: d)
                guard !o else { throw fail("tensor \(tname) element count overflows: dims \(info.dims)") }
                count = p
            }
            guard info.dims[0] % blockSize == 0 else {
                throw fail("tensor \(tname) row length \(info.dims[0]) is not a multiple of the \(info.type) block size \(blockSize)")
            }
            guard let size = info.type.byteCount(elements: count) else {
                throw fail("tensor \(tname) byte size overflows: dims \(info.dims)")
            }
            guard info.offset % UInt64(alignment) == 0 else {
                throw fail("tensor \(tname) offset \(info.offset) is not a multiple of the alignment \(alignment)")
            }
            guard info.offset <= UInt64(dataSize), size <= dataSize - Int(info.offset) else {
                throw fail("tensor \(tname) data (\(size) bytes at \(info.offset)) extends past the end of the file")
            }
            tensors.append(GGUFTensorInfo(name: tname, dims: info.dims, type: info.type, offset: Int(info.offset),
                                          elementCount: count, byteCount: size))
        }

        // Tensor data ranges must not overlap.
        let sorted = tensors.sorted { $0.offset < $1.offset }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.offset + a.byteCount > b.offset {
            throw fail("tensors \(a.name) and \(b.name) overlap")
        }

        return Parsed(version: version, keys: keys, metadata: metadata, tensors: tensors,
                      alignment: alignment, dataOffset: dataOffset)
    }

    /// A u64-length-prefixed UTF-8 string.
    static func readString(_ r: inout ByteReader, _ fail: (String) -> BatchCoreError,
                           what: @autoclosure () -> String) throws -> String {
        let n = try r.u64()
        guard n <= UInt64(r.remaining) else {
            throw fail("\(what()): string length \(n) exceeds the \(r.remaining) remaining bytes")
        }
        let raw = try r.raw(Int(n))
        guard let s = String(validating: raw, as: UTF8.self) else { throw fail("\(what()): string is not valid UTF-8") }
        return s
    }

    static func readValue(_ r: inout ByteReader, _ type: GGUFValueType, _ fail: (String) -> BatchCoreError,
                          key: String) throws -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try r.u8())
        case .int8: return .int8(Int8(bitPattern: try r.u8()))
        case .uint16: return .uint16(try readU16(&r))
        case .int16: return .int16(Int16(bitPattern: try readU16(&r)))
        case .uint32: return .uint32(try r.u32())
        case .int32: return .int32(Int32(bitPattern: try r.u32()))
        case .float32: return .float32(Float(bitPattern: try r.u32()))
        case .bool: return .bool(try readBool(&r, fail, key))
        case .string: return .string(try readString(&r, fail, what: "metadata \(key)"))
        case .array: return .array(try readArray(&r, fail, key: key, depth: 1))
        case .uint64: return .uint64(try r.u64())
        case .int64: return .int64(try r.i64())
        case .float64: return .float64(try r.f64())
        }
    }

    static func readU16(_ r: inout ByteReader) throws -> UInt16 {
        UInt16(littleEndian: try r.raw(2).loadUnaligned(as: UInt16.self))
    }

    static func readBool(_ r: inout ByteReader, _ fail: (String) -> BatchCoreError, _ key: String) throws -> Bool {
        let b = try r.u8()
        guard b <= 1 else { throw fail("metadata \(key): bool byte \(b) is neither 0 nor 1") }
        return b == 1
    }

    /// Element type (u32), count (u64), then the elements. The count is checked against
    /// the remaining bytes before anything is allocated.
    static func readArray(_ r: inout ByteReader, _ fail: (String) -> BatchCoreError, key: String,
                          depth: Int) throws -> GGUFArray {
        guard depth <= maxArrayDepth else { throw fail("metadata \(key): arrays nested deeper than \(maxArrayDepth)") }
        let rawType = try r.u32()
        guard let type = GGUFValueType(rawValue: rawType) else {
            throw fail("metadata \(key): unknown array element type \(rawType)")
        }
        let n64 = try r.u64()
        guard n64 <= UInt64(r.remaining / type.minEncodedSize) else {
            throw fail("metadata \(key): array of \(n64) \(type) exceeds the \(r.remaining) remaining bytes")
        }
        let n = Int(n64)
        func fixed<T>(_ width: Int, _ load: (UnsafeRawBufferPointer, Int) -> T) throws -> [T] {
            let raw = try r.raw(n * width)  // n * width <= remaining: no overflow
            return (0..<n).map { load(raw, $0 * width) }
        }
        switch type {
        case .uint8: return .uint8(Array(try r.raw(n)))
        case .int8: return .int8(try r.raw(n).map { Int8(bitPattern: $0) })
        case .uint16: return .uint16(try fixed(2) { UInt16(littleEndian: $0.loadUnaligned(fromByteOffset: $1, as: UInt16.self)) })
        case .int16: return .int16(try fixed(2) { Int16(littleEndian: $0.loadUnaligned(fromByteOffset: $1, as: Int16.self)) })
        case .uint32: return .uint32(try fixed(4) { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: $1, as: UInt32.self)) })
        case .int32: return .int32(try fixed(4) { Int32(littleEndian: $0.loadUnaligned(fromByteOffset: $1, as: Int32.self)) })
        case .float32:
            return .float32(try fixed(4) { Float(bitPattern: UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: $1, as: UInt32.self))) })
        case .uint64: return .uint64(try fixed(8) { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: $1, as: UInt64.self)) })
        case .int64: return .int64(try fixed(8) { Int64(littleEndian: $0.loadUnaligned(fromByteOffset: $1, as: Int64.self)) })
        case .float64:
            return .float64(try fixed(8) { Double(bitPattern: UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: $1, as: UInt64.self))) })
        case .bool:
            var out: [Bool] = []
            out.reserveCapacity(Swift.min(n, reserveLimit))
            for _ in 0..<n { out.append(try readBool(&r, fail, key)) }
            return .bool(out)
        case .string:
            var out: [String] = []
            out.reserveCapacity(Swift.min(n, reserveLimit))
            for i in 0..<n { out.append(try readString(&r, fail, what: "metadata \(key)[\(i)]")) }
            return .string(out)
        case .array:
            var out: [GGUFArray] = []
            out.reserveCapacity(Swift.min(n, reserveLimit))
            for _ in 0..<n { out.append(try readArray(&r, fail, key: key, depth: depth + 1)) }
            return .array(out)
        }
    }
}

