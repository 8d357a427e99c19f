/// GPT-2 byte-level encoding: every byte 0...255 is shown as one printable Unicode
/// scalar so that BPE vocabularies can be stored as text. Printable Latin-1 bytes
/// ('!'...'~', '¡'...'¬', '®'...'ÿ') stand for themselves; the 68 others (controls,
/// space, DEL, NBSP, soft hyphen) take U+0100, U+0101, ... in byte order.
enum ByteLevel {
    /// Scalar value that shows byte `b`.
    static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            if isSelfShown(UInt8(b)) {
                table[b] = UInt32(b)
            } else {
                table[b] = next
                next += 1
            }
        }
        return table
    }()

    /// Inverse of `byteToScalar`, indexed by scalar value (0..<324); -1 where a scalar
    /// shows no byte.
    static let scalarToByte: [Int16] = {
        var table = [Int16](repeating: -1, count: 324)
        for b in 0..<256 { table[Int(byteToScalar[b])] = Int16(b) }
        return table
    }()

    @inline(__always)
    static func isSelfShown(_ b: UInt8) -> Bool {
        (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE)
    }

    /// The byte shown by scalar `v`, or nil.
    @inline(__always)
    static func byte(forScalar v: UInt32) -> UInt8? {
        guard v < 324 else { return nil }
        let b = scalarToByte[Int(v)]
        return b < 0 ? nil : UInt8(b)
    }

    /// UTF-8 bytes of the encoded form of raw bytes `raw` (what a vocabulary stores).
    static func encode<C: Collection>(_ raw: C) -> [UInt8] where C.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(raw.count * 2)
        for b in raw { appendUTF8(byteToScalar[Int(b)], to: &out) }
        return out
    }

    /// Raw bytes of an encoded token text, or nil when a scalar of it shows no byte.
    static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for s in text.unicodeScalars {
            guard let b = byte(forScalar: s.value) else { return nil }
            out.append(b)
        }
        return out
    }

    static func appendUTF8(_ v: UInt32, to out: inout [UInt8]) {
        if v < 0x80 {
            out.append(UInt8(v))
        } else if v < 0x800 {
            out.append(UInt8(0xC0 | (v >> 6)))
            out.append(UInt8(0x80 | (v & 0x3F)))
        } else if v < 0x10000 {
            out.append(UInt8(0xE0 | (v >> 12)))
            out.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (v & 0x3F)))
        } else {
            out.append(UInt8(0xF0 | (v >> 18)))
            out.append(UInt8(0x80 | ((v >> 12) & 0x3F)))
            out.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (v & 0x3F)))
        }
    }
}
