import BCCore
/// A JSON value (RFC 8259). Numbers without a fraction or exponent that fit in
/// Int64 are `.int`; all others are `.double`. Objects keep their keys in document
/// order and reject duplicate keys.
package enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    // MARK: Accessors

    package var isNull: Bool { if case .null = self { return true } else { return false } }
    package var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    package var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    package var arrayValue: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    package var objectValue: JSONObject? { if case .object(let o) = self { return o } else { return nil } }

    /// An integer (or a double with an integral value) that fits in Int.
    package var intValue: Int? {
        switch self {
        case .int(let i): return Int(exactly: i)
        case .double(let d):
            guard d.isFinite, d == d.rounded(), abs(d) < 9.0e15 else { return nil }
            return Int(d)
        default: return nil
        }
    }

    /// Any number as a Double.
    package var doubleValue: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }

    /// Member `key` of an object (nil for other values or a missing key).
    package subscript(key: String) -> JSONValue? { objectValue?[key] }

    // MARK: Parsing

    /// Parses one JSON document (surrounding whitespace allowed). Throws
    /// `BatchCoreError.format` with the byte offset of the problem; never traps.
    package static func parse(_ bytes: UnsafeRawBufferPointer, maxDepth: Int = JSONParser.defaultMaxDepth,
                             maxSize: Int = JSONParser.defaultMaxSize) throws -> JSONValue {
        var p = JSONParser(bytes, maxDepth: maxDepth, maxSize: maxSize)
        return try p.parseDocument()
    }

    package static func parse(_ bytes: [UInt8], maxDepth: Int = JSONParser.defaultMaxDepth,
                             maxSize: Int = JSONParser.defaultMaxSize) throws -> JSONValue {
        try bytes.withUnsafeBytes { try parse($0, maxDepth: maxDepth, maxSize: maxSize) }
    }

    package static func parse(_ text: String, maxDepth: Int = JSONParser.defaultMaxDepth,
                             maxSize: Int = JSONParser.defaultMaxSize) throws -> JSONValue {
        var text = text
        return try text.withUTF8 { try parse(UnsafeRawBufferPointer($0), maxDepth: maxDepth, maxSize: maxSize) }
    }

    // MARK: Serialization

    /// Compact JSON text (`pretty`: two-space indentation). Non-finite doubles, which
    /// JSON cannot express, are written as null.
    package func serialized(pretty: Bool = false) -> String {
        var out: [UInt8] = []
        write(to: &out, pretty: pretty, indent: 0)
        return String(decoding: out, as: UTF8.self)
    }

    func write(to out: inout [UInt8], pretty: Bool, indent: Int) {
        func newline(_ level: Int) {
            guard pretty else { return }
            out.append(0x0A)
            out.append(contentsOf: repeatElement(0x20, count: 2 * level))
        }
        switch self {
        case .null: out.append(contentsOf: Array("null".utf8))
        case .bool(let b): out.append(contentsOf: Array((b ? "true" : "false").utf8))
        case .int(let i): out.append(contentsOf: Array(String(i).utf8))
        case .double(let d):
            if !d.isFinite {
                out.append(contentsOf: Array("null".utf8))
            } else if d == d.rounded(), abs(d) < 1e15 {
                out.append(contentsOf: Array("\(Int64(d)).0".utf8))
            } else {
                out.append(contentsOf: Array("\(d)".utf8))
            }
        case .string(let s): JSONValue.writeString(s, to: &out)
        case .array(let a):
            out.append(UInt8(ascii: "["))
            for (i, v) in a.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                newline(indent + 1)
                v.write(to: &out, pretty: pretty, indent: indent + 1)
            }
            if !a.isEmpty { newline(indent) }
            out.append(UInt8(ascii: "]"))
        case .object(let o):
            out.append(UInt8(ascii: "{"))
            for (i, k) in o.keys.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                newline(indent + 1)
                JSONValue.writeString(k, to: &out)
                out.append(UInt8(ascii: ":"))
                if pretty { out.append(0x20) }
                o[k]!.write(to: &out, pretty: pretty, indent: indent + 1)
            }
            if !o.keys.isEmpty { newline(indent) }
            out.append(UInt8(ascii: "}"))
        }
    }

    static func writeString(_ s: String, to out: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        out.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): out.append(contentsOf: [0x5C, UInt8(ascii: "\"")])
            case 0x5C: out.append(contentsOf: [0x5C, 0x5C])
            case 0x0A: out.append(contentsOf: [0x5C, UInt8(ascii: "n")])
            case 0x0D: out.append(contentsOf: [0x5C, UInt8(ascii: "r")])
            case 0x09: out.append(contentsOf: [0x5C, UInt8(ascii: "t")])
            case 0x08: out.append(contentsOf: [0x5C, UInt8(ascii: "b")])
            case 0x0C: out.append(contentsOf: [0x5C, UInt8(ascii: "f")])
            case 0..<0x20, 0x7F:
                out.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, hex[Int(b >> 4)], hex[Int(b & 15)]])
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}

/// A JSON object: members in document order with keyed lookup.
package struct JSONObject: Equatable, Sendable {
    package private(set) var keys: [String] = []
    private var members: [String: JSONValue] = [:]

    package init() {}

    /// Builds an object from members in order (a repeated key keeps its first position
    /// and takes the last value).
    package init(_ pairs: [(String, JSONValue)]) {
        for (k, v) in pairs { self[k] = v }
    }

    package var count: Int { keys.count }

    package subscript(key: String) -> JSONValue? {
        get { members[key] }
        set {
            if let newValue {
                if members.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if members.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    /// Inserts a new member; false (and no change) when `key` is already present.
    mutating func insertNew(_ key: String, _ value: JSONValue) -> Bool {
        guard members[key] == nil else { return false }
        members[key] = value
        keys.append(key)
        return true
    }

    /// Members in document order.
    package var pairs: [(key: String, value: JSONValue)] { keys.map { ($0, members[$0]!) } }

    package static func == (a: JSONObject, b: JSONObject) -> Bool { a.keys == b.keys && a.members == b.members }
}

/// Recursive-descent JSON parser over bytes. Bounded: nesting depth `maxDepth`,
/// input size `maxSize`; every read is bounds-checked.
package struct JSONParser {
    package static let defaultMaxDepth = 64
    package static let defaultMaxSize = 512 << 20

    let bytes: UnsafeRawBufferPointer
    let maxDepth: Int
    let maxSize: Int
    var pos = 0
    var depth = 0
    /// Scratch for decoding strings.
    var scratch: [UInt8] = []

    init(_ bytes: UnsafeRawBufferPointer, maxDepth: Int, maxSize: Int) {
        self.bytes = bytes
        self.maxDepth = maxDepth
        self.maxSize = maxSize
    }

    func fail(_ message: String, at offset: Int? = nil) -> BatchCoreError {
        BatchCoreError.format("JSON: \(message) at byte offset \(offset ?? pos)")
    }

    mutating func parseDocument() throws -> JSONValue {
        guard bytes.count <= maxSize else {
            throw BatchCoreError.format("JSON: input of \(bytes.count) bytes exceeds the limit of \(maxSize)")
        }
        skipSpace()
        let v = try parseValue()
        skipSpace()
        guard pos == bytes.count else { throw fail("unexpected trailing characters") }
        return v
    }

    @inline(__always)
    func peek() -> UInt8? { pos < bytes.count ? bytes[pos] : nil }

    @inline(__always)
    mutating func skipSpace() {
        while pos < bytes.count {
            let c = bytes[pos]
            guard c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 else { return }
            pos += 1
        }
    }

    mutating func expectLiteral(_ word: StaticString) throws {
        let n = word.utf8CodeUnitCount
        guard bytes.count - pos >= n else { throw fail("truncated literal") }
        let p = word.utf8Start
        for i in 0..<n where bytes[pos + i] != p[i] { throw fail("invalid literal", at: pos + i) }
        pos += n
    }

    mutating func parseValue() throws -> JSONValue {
        guard let c = peek() else { throw fail("unexpected end of input") }
        switch c {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw fail("unexpected character 0x\(String(c, radix: 16))")
        }
    }

    mutating func enter() throws {
        depth += 1
        guard depth <= maxDepth else { throw fail("nesting deeper than \(maxDepth)") }
    }

    mutating func parseObject() throws -> JSONValue {
        try enter()
        pos += 1  // {
        var obj = JSONObject()
        skipSpace()
        if peek() == UInt8(ascii: "}") {
            pos += 1
            depth -= 1
            return .object(obj)
        }
        while true {
            skipSpace()
            guard peek() == UInt8(ascii: "\"") else { throw fail(peek() == nil ? "unexpected end of input" : "expected a string key") }
            let keyStart = pos
            let key = try parseString()
            skipSpace()
            guard peek() == UInt8(ascii: ":") else { throw fail("expected ':'") }
            pos += 1
            skipSpace()
            let value = try parseValue()
            guard obj.insertNew(key, value) else { throw fail("duplicate key \"\(key)\"", at: keyStart) }
            skipSpace()
            guard let c = peek() else { throw fail("unexpected end of input") }
            pos += 1
            if c == UInt8(ascii: "}") { break }
            guard c == UInt8(ascii: ",") else { throw fail("expected ',' or '}'", at: pos - 1) }
        }
        depth -= 1
        return .object(obj)
    }

    mutating func parseArray() throws -> JSONValue {
        try enter()
        pos += 1  // [
        var arr: [JSONValue] = []
        skipSpace()
        if peek() == UInt8(ascii: "]") {
            pos += 1
            depth -= 1
            return .array(arr)
        }
        while true {
            skipSpace()
            arr.append(try parseValue())
            skipSpace()
            guard let c = peek() else { throw fail("unexpected end of input") }
            pos += 1
            if c == UInt8(ascii: "]") { break }
            guard c == UInt8(ascii: ",") else { throw fail("expected ',' or ']'", at: pos - 1) }
        }
        depth -= 1
        return .array(arr)
    }

    mutating func hex4() throws -> UInt32 {
        guard bytes.count - pos >= 4 else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for i in 0..<4 {
            let c = bytes[pos + i]
            let d: UInt32
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
            default: throw fail("invalid hex digit in \\u escape", at: pos + i)
            }
            v = v << 4 | d
        }
        pos += 4
        return v
    }

    static func appendUTF8(_ v: UInt32, to out: inout [UInt8]) {
        switch v {
        case 0..<0x80: out.append(UInt8(v))
        case 0x80..<0x800:
            out.append(UInt8(0xC0 | (v >> 6)))
            out.append(UInt8(0x80 | (v & 0x3F)))
        case 0x800..<0x10000:
            out.append(UInt8(0xE0 | (v >> 12)))
            out.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (v & 0x3F)))
        default:
            out.append(UInt8(0xF0 | (v >> 18)))
            out.append(UInt8(0x80 | ((v >> 12) & 0x3F)))
            out.append(UInt8(0x80 | ((v >> 6) & 0x3F)))
            out.append(UInt8(0x80 | (v & 0x3F)))
        }
    }

    mutating func parseString() throws -> String {
        let start = pos
        pos += 1  // "
        // Fast path: no escapes.
        var i = pos
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "\"") || c == 0x5C || c < 0x20 { break }
            i += 1
        }
        guard i < bytes.count else { throw fail("unterminated string", at: start) }
        if bytes[i] == UInt8(ascii: "\"") {
            let raw = UnsafeRawBufferPointer(rebasing: bytes[pos..<i])
            guard let s = String(validating: raw, as: UTF8.self) else { throw fail("string is not valid UTF-8", at: start) }
            pos = i + 1
            return s
        }
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[pos..<i]))
        pos = i
        while true {
            guard pos < bytes.count else { throw fail("unterminated string", at: start) }
            let c = bytes[pos]
            if c == UInt8(ascii: "\"") { pos += 1; break }
            if c < 0x20 { throw fail("unescaped control character in string") }
            if c != 0x5C { scratch.append(c); pos += 1; continue }
            pos += 1
            guard pos < bytes.count else { throw fail("unterminated escape", at: pos - 1) }
            let e = bytes[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "\""): scratch.append(UInt8(ascii: "\""))
            case 0x5C: scratch.append(0x5C)
            case UInt8(ascii: "/"): scratch.append(UInt8(ascii: "/"))
            case UInt8(ascii: "b"): scratch.append(0x08)
            case UInt8(ascii: "f"): scratch.append(0x0C)
            case UInt8(ascii: "n"): scratch.append(0x0A)
            case UInt8(ascii: "r"): scratch.append(0x0D)
            case UInt8(ascii: "t"): scratch.append(0x09)
            case UInt8(ascii: "u"):
                let escapeAt = pos - 2
                var v = try hex4()
                if v >= 0xD800 && v < 0xDC00 {
                    guard bytes.count - pos >= 2, bytes[pos] == 0x5C, bytes[pos + 1] == UInt8(ascii: "u") else {
                        throw fail("unpaired high surrogate", at: escapeAt)
                    }
                    pos += 2
                    let low = try hex4()
                    guard low >= 0xDC00 && low < 0xE000 else { throw fail("invalid low surrogate", at: pos - 6) }
                    v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00)
                } else if v >= 0xDC00 && v < 0xE000 {
                    throw fail("unpaired low surrogate", at: escapeAt)
                }
                JSONParser.appendUTF8(v, to: &scratch)
            default:
                throw fail("invalid escape character", at: pos - 1)
            }
        }
        guard let s = String(validating: scratch, as: UTF8.self) else { throw fail("string is not valid UTF-8", at: start) }
        return s
    }

    mutating func parseNumber() throws -> JSONValue {
        let start = pos
        func isDigit(_ c: UInt8?) -> Bool { c.map { $0 >= 0x30 && $0 <= 0x39 } ?? false }
        if peek() == UInt8(ascii: "-") { pos += 1 }
        guard let first = peek(), isDigit(first) else { throw fail("invalid number", at: start) }
        if first == UInt8(ascii: "0") {
            pos += 1
            if isDigit(peek()) { throw fail("leading zero in number", at: start) }
        } else {
            while isDigit(peek()) { pos += 1 }
        }
        var integral = true
        if peek() == UInt8(ascii: ".") {
            integral = false
            pos += 1
            guard isDigit(peek()) else { throw fail("expected a digit after '.'") }
            while isDigit(peek()) { pos += 1 }
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            integral = false
            pos += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { pos += 1 }
            guard isDigit(peek()) else { throw fail("expected a digit in the exponent") }
            while isDigit(peek()) { pos += 1 }
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<pos]), as: UTF8.self)
        if integral, let i = Int64(text) { return .int(i) }
        guard let d = Double(text), d.isFinite else { throw fail("number \(text.prefix(40)) is out of range", at: start) }
        return .double(d)
    }
}
