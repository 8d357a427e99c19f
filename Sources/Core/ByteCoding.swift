/// Little-endian binary writer for batchcore's own file formats.
package struct ByteWriter {
    package private(set) var bytes: [UInt8] = []

    package init() {}

    package mutating func u8(_ v: UInt8) { bytes.append(v) }
    package mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    package mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    package mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    package mutating func f64(_ v: Double) { u64(v.bitPattern) }
    package mutating func raw(_ v: [UInt8]) { bytes.append(contentsOf: v) }
    package mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        u32(UInt32(utf8.count))
        bytes.append(contentsOf: utf8)
    }
    /// float32 values, little-endian.
    package mutating func floats(_ p: UnsafePointer<Float>, _ count: Int) {
        let start = bytes.count
        bytes.append(contentsOf: repeatElement(0, count: count * 4))
        bytes.withUnsafeMutableBytes { dst in
            for i in 0..<count { dst.storeBytes(of: p[i].bitPattern.littleEndian, toByteOffset: start + 4 * i, as: UInt32.self) }
        }
    }
}

/// Bounds-checked little-endian reader: every read past the end throws a format
/// error instead of reading out of bounds.
package struct ByteReader {
    package let bytes: UnsafeRawBufferPointer
    package private(set) var offset = 0
    private let what: String

    package init(_ bytes: UnsafeRawBufferPointer, what: String) {
        self.bytes = bytes
        self.what = what
    }

    package var remaining: Int { bytes.count - offset }

    package mutating func need(_ n: Int) throws {
        guard n >= 0, n <= remaining else {
            throw BatchCoreError.format("\(what): truncated (need \(n) bytes at offset \(offset), \(remaining) left)")
        }
    }

    package mutating func u8() throws -> UInt8 {
        try need(1); defer { offset += 1 }
        return bytes[offset]
    }
    package mutating func u32() throws -> UInt32 {
        try need(4); defer { offset += 4 }
        return UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
    package mutating func u64() throws -> UInt64 {
        try need(8); defer { offset += 8 }
        return UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }
    package mutating func i64() throws -> Int64 { Int64(bitPattern: try u64()) }
    package mutating func f64() throws -> Double { Double(bitPattern: try u64()) }
    package mutating func raw(_ n: Int) throws -> UnsafeRawBufferPointer {
        try need(n); defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + n])
    }
    package mutating func string(maxLength: Int = 1 << 20) throws -> String {
        let n = Int(try u32())
        guard n <= maxLength else { throw BatchCoreError.format("\(what): string length \(n) too large") }
        let r = try raw(n)
        guard let s = String(validating: r, as: UTF8.self) else {
            throw BatchCoreError.format("\(what): string is not valid UTF-8")
        }
        return s
    }
    /// Reads `count` little-endian float32 values into `dst`.
    package mutating func floats(into dst: UnsafeMutablePointer<Float>, _ count: Int) throws {
        guard count >= 0, count <= remaining / 4 else {
            throw BatchCoreError.format("\(what): truncated float array of \(count) values")
        }
        for i in 0..<count {
            dst[i] = Float(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset + 4 * i, as: UInt32.self)))
        }
        offset += 4 * count
    }
}
