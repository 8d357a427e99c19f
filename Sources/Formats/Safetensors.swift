import BCCore
#if canImport(Glibc)
import Glibc
#endif

/// Element types of the safetensors format. Only F32, F16 and BF16 convert to
/// float32; the others can be read as raw bytes.
package enum SafetensorsDType: String, Sendable, CaseIterable {
    case bool = "BOOL"
    case u8 = "U8", i8 = "I8", f8e5m2 = "F8_E5M2", f8e4m3 = "F8_E4M3"
    case i16 = "I16", u16 = "U16", f16 = "F16", bf16 = "BF16"
    case i32 = "I32", u32 = "U32", f32 = "F32"
    case f64 = "F64", i64 = "I64", u64 = "U64"

    package var byteSize: Int {
        switch self {
        case .bool, .u8, .i8, .f8e5m2, .f8e4m3: 1
        case .i16, .u16, .f16, .bf16: 2
        case .i32, .u32, .f32: 4
        case .f64, .i64, .u64: 8
        }
    }

    /// Whether `floats` can convert this type to float32.
    package var isFloat: Bool { self == .f32 || self == .f16 || self == .bf16 }

    var ggmlType: GGMLType? {
        switch self {
        case .f32: .f32
        case .f16: .f16
        case .bf16: .bf16
        default: nil
        }
    }
}

/// One tensor of a safetensors file.
package struct SafetensorsTensorInfo: Equatable, Sendable {
    package let name: String
    package let dtype: SafetensorsDType
    /// Row-major (PyTorch) order: shape.last is the fastest-varying dimension.
    package let shape: [Int]
    /// Byte range relative to the start of the data section (after the header).
    package let begin: Int
    package let end: Int
    package let elementCount: Int
    package var byteCount: Int { end - begin }
}

/// A safetensors file: an 8-byte little-endian header length, a JSON header
/// `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`,
/// then the data section.
///
/// `SafetensorsFile(path:)` maps the file read-only; `SafetensorsFile(bytes:)`
/// copies. Everything is validated at open (header length against the file size and
/// `maxHeaderSize`, dtypes, shapes of rank <= 4, byte counts against the shapes with
/// overflow checks, ranges inside the data section and not overlapping); a bad file
/// throws `BatchCoreError` of kind `.format` and never reads out of bounds.
package final class SafetensorsFile: @unchecked Sendable {
    package static let maxHeaderSize = 100 << 20
    package static let maxRank = 4

    /// `__metadata__` (string values only, as the format requires).
    package let metadata: [String: String]
    /// Tensors sorted by data offset.
    package let tensors: [SafetensorsTensorInfo]
    /// File offset of the data section (8 + header length).
    package let dataOffset: Int
    /// The whole file.
    package let bytes: UnsafeRawBufferPointer
    package let name: String

    private let tensorIndex: [String: Int]
    private let release: () -> Void

    package convenience init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BatchCoreError.io("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw BatchCoreError.io("cannot stat \(path): \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw BatchCoreError.io("\(path) is not a regular file") }
        let size = Int(st.st_size)
        guard size >= 8 else { throw BatchCoreError.format("\(path): \(size) bytes is too small to be a safetensors file") }
        guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0),
              mapped != UnsafeMutableRawPointer(bitPattern: -1)
        else { throw BatchCoreError.io("cannot map \(path): \(String(cString: strerror(errno)))") }
        let buffer = UnsafeRawBufferPointer(start: mapped, count: size)
        let parsed: SafetensorsParser.Parsed
        do {
            parsed = try SafetensorsParser.parse(buffer, name: path)
        } catch {
            munmap(mapped, size)
            throw error
        }
        self.init(parsed, buffer, name: path, release: { _ = munmap(mapped, size) })
    }

    /// Validates safetensors data held in memory; the bytes are copied.
    package convenience init(bytes source: UnsafeRawBufferPointer, name: String = "safetensors data") throws {
        let (parsed, buffer, storage) = try Self.copyAndParse(source, name: name)
        self.init(parsed, buffer, name: name, release: { storage.deallocate() })
    }

    package convenience init(bytes: [UInt8], name: String = "safetensors data") throws {
        let (parsed, buffer, storage) = try bytes.withUnsafeBytes { try Self.copyAndParse($0, name: name) }
        self.init(parsed, buffer, name: name, release: { storage.deallocate() })
    }

    private static func copyAndParse(_ source: UnsafeRawBufferPointer, name: String) throws
        -> (SafetensorsParser.Parsed, UnsafeRawBufferPointer, UnsafeMutableRawPointer) {
        let storage = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(source.count, 1), alignment: 64)
        if let base = source.baseAddress, source.count > 0 { storage.copyMemory(from: base, byteCount: source.count) }
        let buffer = UnsafeRawBufferPointer(start: storage, count: source.count)
        do {
            return (try SafetensorsParser.parse(buffer, name: name), buffer, storage)
        } catch {
            storage.deallocate()
            throw error
        }
    }

    private init(_ parsed: SafetensorsParser.Parsed, _ bytes: UnsafeRawBufferPointer, name: String,
                 release: @escaping () -> Void) {
        metadata = parsed.metadata
        tensors = parsed.tensors
        dataOffset = parsed.dataOffset
        self.bytes = bytes
        self.name = name
        self.release = release
        var index: [String: Int] = [:]
        for (i, t) in parsed.tensors.enumerated() { index[t.name] = i }
        tensorIndex = index
    }

    deinit { release() }

    package func tensor(named name: String) -> SafetensorsTensorInfo? { tensorIndex[name].map { tensors[$0] } }

    /// Raw little-endian bytes of tensor `name` (valid while this object is alive).
    package func tensorData(_ name: String) throws -> UnsafeRawBufferPointer {
        guard let t = tensor(named: name) else { throw BatchCoreError(.notFound, "\(self.name): no tensor \(name)") }
        return UnsafeRawBufferPointer(rebasing: bytes[(dataOffset + t.begin)..<(dataOffset + t.end)])
    }

    /// Converts tensor `name` (F32, F16 or BF16) to float32 into `out[0..<elementCount]`.
    package func floats(_ name: String, into out: UnsafeMutablePointer<Float>) throws {
        guard let t = tensor(named: name) else { throw BatchCoreError(.notFound, "\(self.name): no tensor \(name)") }
        guard let type = t.dtype.ggmlType else {
            throw BatchCoreError(.unsupported, "\(self.name): tensor \(name) has dtype \(t.dtype.rawValue), not F32, F16 or BF16")
        }
        try dequantize(type: type, data: try tensorData(name), count: t.elementCount, into: out)
    }

    /// Tensor `name` converted to float32.
    package func floats(_ name: String) throws -> [Float] {
        guard let t = tensor(named: name) else { throw BatchCoreError(.notFound, "\(self.name): no tensor \(name)") }
        guard t.dtype.isFloat else {
            throw BatchCoreError(.unsupported, "\(self.name): tensor \(name) has dtype \(t.dtype.rawValue), not F32, F16 or BF16")
        }
        if t.elementCount == 0 { return [] }
        var out = [Float](repeating: 0, count: t.elementCount)
        try out.withUnsafeMutableBufferPointer { try floats(name, into: $0.baseAddress!) }
        return out
    }
}

/// The safetensors header parser: a pure function of the bytes.
enum SafetensorsParser {
    struct Parsed {
        var metadata: [String: String]
        var tensors: [SafetensorsTensorInfo]
        var dataOffset: Int
    }

    static func parse(_ bytes: UnsafeRawBufferPointer, name: String) throws -> Parsed {
        func fail(_ message: String) -> BatchCoreError { BatchCoreError.format("\(name): \(message)") }
        guard bytes.count >= 8 else { throw fail("\(bytes.count) bytes is too small to be a safetensors file") }
        let n64 = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
        guard n64 <= UInt64(SafetensorsFile.maxHeaderSize) else {
            throw fail("header length \(n64) exceeds the limit of \(SafetensorsFile.maxHeaderSize) bytes")
        }
        guard n64 <= UInt64(bytes.count - 8) else {
            throw fail("header length \(n64) exceeds the \(bytes.count - 8) bytes after the length field")
        }
        let headerLength = Int(n64)
        guard headerLength >= 2 else { throw fail("header length \(headerLength) is too small") }
        let header = UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + headerLength)])
        guard header[0] == UInt8(ascii: "{") else { throw fail("header does not start with '{'") }
        let json: JSONValue
        do { json = try JSONValue.parse(header, maxDepth: 8) } catch let e as BatchCoreError {
            throw fail("header: \(e.message)")
        }
        guard let root = json.objectValue else { throw fail("header is not a JSON object") }
        let dataOffset = 8 + headerLength
        let dataSize = bytes.count - dataOffset

        var metadata: [String: String] = [:]
        var tensors: [SafetensorsTensorInfo] = []
        tensors.reserveCapacity(root.count)
        for (key, value) in root.pairs {
            if key == "__metadata__" {
                guard let m = value.objectValue else { throw fail("__metadata__ is not an object") }
                for (k, v) in m.pairs {
                    guard let s = v.stringValue else { throw fail("__metadata__.\(k) is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let info = value.objectValue else { throw fail("tensor \(key): entry is not an object") }
            for k in info.keys where k != "dtype" && k != "shape" && k != "data_offsets" {
                throw fail("tensor \(key): unknown field \(k)")
            }
            guard let dtypeName = info["dtype"]?.stringValue else { throw fail("tensor \(key): missing dtype") }
            guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
                throw fail("tensor \(key): unknown dtype \(dtypeName)")
            }
            guard let shapeValues = info["shape"]?.arrayValue else { throw fail("tensor \(key): missing shape") }
            guard shapeValues.count <= SafetensorsFile.maxRank else {
                throw fail("tensor \(key): rank \(shapeValues.count) exceeds \(SafetensorsFile.maxRank)")
            }
            var shape: [Int] = []
            var count = 1
            for v in shapeValues {
                guard case .int(let d64) = v, d64 >= 0, let d = Int(exactly: d64) else {
                    throw fail("tensor \(key): invalid dimension \(v.serialized().prefix(40))")
                }
                let (p, o) = count.multipliedReportingOverflow(by: d)
                guard !o else { throw fail("tensor \(key): element count of shape \(shape + [d]) overflows") }
                count = p
                shape.append(d)
            }
            let (size, o) = count.multipliedReportingOverflow(by: dtype.byteSize)
            guard !o else { throw fail("tensor \(key): byte size of shape \(shape) overflows") }
            guard let offsets = info["data_offsets"]?.arrayValue, offsets.count == 2,
                  case .int(let b64) = offsets[0], case .int(let e64) = offsets[1]
            else { throw fail("tensor \(key): data_offsets is not a pair of integers") }
            guard b64 >= 0, b64 <= e64 else { throw fail("tensor \(key): data_offsets [\(b64), \(e64)] are invalid") }
            guard e64 <= Int64(dataSize) else {
                throw fail("tensor \(key): data_offsets [\(b64), \(e64)] extend past the \(dataSize)-byte data section")
            }
            let begin = Int(b64), end = Int(e64)
            guard end - begin == size else {
                throw fail("tensor \(key): \(end - begin) bytes of data, shape \(shape) of \(dtype.rawValue) needs \(size)")
            }
            tensors.append(SafetensorsTensorInfo(name: key, dtype: dtype, shape: shape, begin: begin, end: end,
                                                 elementCount: count))
        }
        tensors.sort { $0.begin != $1.begin ? $0.begin < $1.begin : $0.name < $1.name }
        var lastEnd = 0, lastName = ""
        for t in tensors where t.byteCount > 0 {
            guard t.begin >= lastEnd else { throw fail("tensors \(lastName) and \(t.name) overlap") }
            lastEnd = t.end
            lastName = t.name
        }
        return Parsed(metadata: metadata, tensors: tensors, dataOffset: dataOffset)
    }
}

// MARK: - Writer

/// Builds a safetensors file from float32 data stored as F32, F16 or BF16.
/// Tensors are written in name order (stable output); the header is padded with
/// spaces to a multiple of 8 bytes.
package struct SafetensorsWriter {
    enum Source {
        case owned([Float])
        /// Memory the caller keeps alive until the writer is done.
        case borrowed(UnsafePointer<Float>, Int)
    }

    struct Entry {
        var dtype: SafetensorsDType
        var shape: [Int]
        var source: Source
        var count: Int {
            switch source {
            case .owned(let a): a.count
            case .borrowed(_, let n): n
            }
        }
        func withFloats<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
            switch source {
            case .owned(let a): return try a.withUnsafeBufferPointer(body)
            case .borrowed(let p, let n): return try body(UnsafeBufferPointer(start: p, count: n))
            }
        }
    }

    package var metadata: [String: String] = [:]
    private(set) var entries: [String: Entry] = [:]

    package init() {}

    package var tensorNames: [String] { entries.keys.sorted() }

    /// Adds tensor `name` of `shape` (row-major) from `data` (product(shape) floats),
    /// stored as `dtype` (F32, F16 or BF16; F16/BF16 round to nearest even).
    package mutating func add(_ name: String, shape: [Int], dtype: SafetensorsDType = .f32, data: [Float]) throws {
        try add(name, shape: shape, dtype: dtype, source: .owned(data))
    }

    /// Adds tensor `name` whose data is read from `p` when the file is written; `p`
    /// must stay valid until then.
    mutating func addBorrowed(_ name: String, shape: [Int], dtype: SafetensorsDType, _ p: UnsafePointer<Float>,
                              count: Int) throws {
        try add(name, shape: shape, dtype: dtype, source: .borrowed(p, count))
    }

    mutating func add(_ name: String, shape: [Int], dtype: SafetensorsDType, source: Source) throws {
        guard dtype.isFloat else { throw BatchCoreError(.unsupported, "safetensors writer: dtype \(dtype.rawValue)") }
        guard name != "__metadata__", !name.isEmpty else { throw BatchCoreError.invalid("safetensors writer: tensor name '\(name)'") }
        guard entries[name] == nil else { throw BatchCoreError.invalid("safetensors writer: duplicate tensor \(name)") }
        guard shape.count <= SafetensorsFile.maxRank, shape.allSatisfy({ $0 >= 0 }) else {
            throw BatchCoreError.invalid("safetensors writer: tensor \(name) has shape \(shape)")
        }
        var count = 1
        for d in shape {
            let (p, o) = count.multipliedReportingOverflow(by: d)
            guard !o else { throw BatchCoreError.invalid("safetensors writer: tensor \(name) shape \(shape) overflows") }
            count = p
        }
        let entry = Entry(dtype: dtype, shape: shape, source: source)
        guard count == entry.count else {
            throw BatchCoreError.invalid("safetensors writer: tensor \(name) has \(entry.count) values for shape \(shape)")
        }
        entries[name] = entry
    }

    package mutating func add(_ name: String, shape: [Int], dtype: SafetensorsDType = .f32,
                             from p: UnsafePointer<Float>, count: Int) throws {
        try add(name, shape: shape, dtype: dtype, data: Array(UnsafeBufferPointer(start: p, count: count)))
    }

    /// Float32 → bfloat16, round to nearest even (NaN stays NaN).
    package static func bf16Bits(_ f: Float) -> UInt16 {
        let bits = f.bitPattern
        if f.isNaN { return UInt16(bits >> 16) | 0x40 }
        let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
        return UInt16(rounded >> 16)
    }

    /// The header JSON (before padding).
    func headerJSON() -> [UInt8] {
        var obj = JSONObject()
        if !metadata.isEmpty {
            var m = JSONObject()
            for k in metadata.keys.sorted() { m[k] = .string(metadata[k]!) }
            obj["__metadata__"] = .object(m)
        }
        var offset = 0
        for name in tensorNames {
            let e = entries[name]!
            let size = e.count * e.dtype.byteSize
            obj[name] = .object(JSONObject([
                ("dtype", .string(e.dtype.rawValue)),
                ("shape", .array(e.shape.map { .int(Int64($0)) })),
                ("data_offsets", .array([.int(Int64(offset)), .int(Int64(offset + size))])),
            ]))
            offset += size
        }
        var out: [UInt8] = []
        JSONValue.object(obj).write(to: &out, pretty: false, indent: 0)
        while out.count % 8 != 0 { out.append(0x20) }
        return out
    }

    /// Hands the file to `sink` in order: length, header, tensor data.
    func emit(_ sink: (UnsafeRawBufferPointer) throws -> Void) throws {
        let header = headerJSON()
        var w = ByteWriter()
        w.u64(UInt64(header.count))
        w.raw(header)
        try w.bytes.withUnsafeBytes(sink)
        let chunk = 1 << 16
        var buf = [UInt8](repeating: 0, count: chunk * 4)
        for name in tensorNames {
            let e = entries[name]!
            try e.withFloats { data in
                var i = 0
                while i < data.count {
                    let n = Swift.min(chunk, data.count - i)
                    let bytes: Int = buf.withUnsafeMutableBytes { dst in
                        switch e.dtype {
                        case .f32:
                            for j in 0..<n { dst.storeBytes(of: data[i + j].bitPattern.littleEndian, toByteOffset: 4 * j, as: UInt32.self) }
                            return 4 * n
                        case .f16:
                            for j in 0..<n { dst.storeBytes(of: Float16(data[i + j]).bitPattern.littleEndian, toByteOffset: 2 * j, as: UInt16.self) }
                            return 2 * n
                        default:
                            for j in 0..<n { dst.storeBytes(of: Self.bf16Bits(data[i + j]).littleEndian, toByteOffset: 2 * j, as: UInt16.self) }
                            return 2 * n
                        }
                    }
                    try buf.withUnsafeBytes { try sink(UnsafeRawBufferPointer(rebasing: $0[0..<bytes])) }
                    i += n
                }
            }
        }
    }

    /// The whole file in memory.
    package func serialized() throws -> [UInt8] {
        var out: [UInt8] = []
        try emit { out.append(contentsOf: $0) }
        return out
    }

    /// Writes the file to `path` through a temporary file renamed into place.
    package func write(to path: String) throws {
        try writeAtomically(path) { sink in try emit(sink) }
    }
}


/// The contents of a (small) file; `.notFound` when it does not exist.
package func readWholeFile(_ path: String, maxSize: Int) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
        if errno == ENOENT { throw BatchCoreError(.notFound, "\(path) does not exist") }
        throw BatchCoreError.io("cannot open \(path): \(String(cString: strerror(errno)))")
    }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw BatchCoreError.io("cannot stat \(path): \(String(cString: strerror(errno)))") }
    guard (st.st_mode & S_IFMT) == S_IFREG else { throw BatchCoreError.io("\(path) is not a regular file") }
    let size = Int(st.st_size)
    guard size <= maxSize else { throw BatchCoreError.format("\(path): \(size) bytes exceeds the limit of \(maxSize)") }
    var out = [UInt8](repeating: 0, count: size)
    var done = 0
    while done < size {
        let n = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + done, size - done) }
        if n < 0 {
            if errno == EINTR { continue }
            throw BatchCoreError.io("cannot read \(path): \(String(cString: strerror(errno)))")
        }
        if n == 0 { break }
        done += n
    }
    if done < size { out.removeSubrange(done...) }
    return out
}

package func fileExists(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0
}

package func isDirectory(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
}

// MARK: - Sharded checkpoints

/// The tensors of one or more safetensors files: a single `model.safetensors`, or a
/// sharded checkpoint described by `model.safetensors.index.json` ("weight_map":
/// tensor name → file name in the same directory).
package final class SafetensorsCollection: @unchecked Sendable {
    package let files: [SafetensorsFile]
    private let location: [String: Int]

    package init(files: [SafetensorsFile]) throws {
        var loc: [String: Int] = [:]
        for (i, f) in files.enumerated() {
            for t in f.tensors {
                guard loc.updateValue(i, forKey: t.name) == nil else {
                    throw BatchCoreError.format("safetensors: tensor \(t.name) appears in more than one file")
                }
            }
        }
        self.files = files
        location = loc
    }

    /// Opens `directory`: the index when present, else `model.safetensors`.
    package convenience init(directory: String) throws {
        let indexPath = directory + "/model.safetensors.index.json"
        if fileExists(indexPath) {
            try self.init(indexPath: indexPath)
        } else {
            try self.init(files: [SafetensorsFile(path: directory + "/model.safetensors")])
        }
    }

    /// Opens the shards listed by a `*.safetensors.index.json`; every tensor must be in
    /// the shard the weight map names.
    package convenience init(indexPath: String) throws {
        let json = try JSONValue.parse(try readWholeFile(indexPath, maxSize: 64 << 20))
        guard let map = json["weight_map"]?.objectValue else {
            throw BatchCoreError.format("\(indexPath): no weight_map object")
        }
        let dir = indexPath.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        var shards: [String] = []
        var expected: [String: String] = [:]
        for (tensor, v) in map.pairs {
            guard let file = v.stringValue, !file.isEmpty, !file.contains("/"), file != ".", file != ".." else {
                throw BatchCoreError.format("\(indexPath): weight_map entry \(tensor) is not a file name")
            }
            if !shards.contains(file) { shards.append(file) }
            expected[tensor] = file
        }
        let files = try shards.map { try SafetensorsFile(path: (dir.isEmpty ? "." : dir) + "/" + $0) }
        try self.init(files: files)
        for (tensor, file) in expected {
            guard let i = location[tensor] else {
                throw BatchCoreError.format("\(indexPath): tensor \(tensor) is not in \(file)")
            }
            guard shards[i] == file else {
                throw BatchCoreError.format("\(indexPath): tensor \(tensor) is in \(shards[i]), not \(file)")
            }
        }
    }

    package func tensor(named name: String) -> SafetensorsTensorInfo? {
        location[name].flatMap { files[$0].tensor(named: name) }
    }

    package var tensorNames: [String] { location.keys.sorted() }

    package func floats(_ name: String, into out: UnsafeMutablePointer<Float>) throws {
        guard let i = location[name] else { throw BatchCoreError(.notFound, "safetensors: no tensor \(name)") }
        try files[i].floats(name, into: out)
    }

    package func floats(_ name: String) throws -> [Float] {
        guard let i = location[name] else { throw BatchCoreError(.notFound, "safetensors: no tensor \(name)") }
        return try files[i].floats(name)
    }
}
