/// Turns tokens into text one token at a time without ever splitting a UTF-8
/// character: bytes of a character whose remaining bytes may still come are held
/// back until they do. Bytes that cannot become valid UTF-8 come out as U+FFFD.
package struct StreamingDecoder: Sendable {
    package let tokenizer: Tokenizer
    /// Whether control tokens are rendered as their text.
    package let special: Bool
    private var bytes = Bytes()

    package init(tokenizer: Tokenizer, special: Bool = false) {
        self.tokenizer = tokenizer
        self.special = special
    }

    /// Bytes held back (the start of a character not yet complete).
    package var heldBytes: [UInt8] { bytes.pending }

    /// Text completed by `token` (possibly empty). Throws `.invalidArgument` for an
    /// id out of range (nothing is consumed then).
    package mutating func push(_ token: Int32) throws -> String {
        bytes.push(try tokenizer.piece(token, special: special))
    }

    /// Text completed by `tokens`.
    package mutating func push(_ tokens: [Int32]) throws -> String {
        var s = ""
        for t in tokens { s += try push(t) }
        return s
    }

    /// Whatever is still held, with U+FFFD for an incomplete character; resets.
    package mutating func finish() -> String { bytes.finish() }

    /// The byte-level part: UTF-8 bytes in, complete text out.
    package struct Bytes: Sendable {
        package private(set) var pending: [UInt8] = []

        package init() {}

        /// Text completed by `more` (possibly empty).
        package mutating func push(_ more: [UInt8]) -> String {
            pending.append(contentsOf: more)
            let cut = pending.count - Self.incompleteSuffixLength(pending)
            guard cut > 0 else { return "" }
            let text = String(decoding: pending[..<cut], as: UTF8.self)
            pending.removeFirst(cut)
            return text
        }

        /// Whatever is still held, with U+FFFD for an incomplete character; resets.
        package mutating func finish() -> String {
            defer { pending.removeAll() }
            return String(decoding: pending, as: UTF8.self)
        }

        /// Length of the trailing bytes that are a proper prefix of some valid UTF-8
        /// character (0 when the bytes end at a character boundary or cannot continue).
        static func incompleteSuffixLength(_ b: [UInt8]) -> Int {
            let n = b.count
            var k = n - 1
            // Walk back over at most 3 continuation bytes to the lead byte.
            while k >= 0 && k >= n - 3 && b[k] & 0xC0 == 0x80 { k -= 1 }
            guard k >= 0 else { return 0 }
            let lead = b[k]
            let need: Int
            switch lead {
            case 0xC2...0xDF: need = 2
            case 0xE0...0xEF: need = 3
            case 0xF0...0xF4: need = 4
            default: return 0
            }
            let have = n - k
            guard have < need else { return 0 }
            if have >= 2 {
                let b1 = b[k + 1]
                let ok: Bool
                switch lead {
                case 0xE0: ok = b1 >= 0xA0
                case 0xED: ok = b1 <= 0x9F
                case 0xF0: ok = b1 >= 0x90
                case 0xF4: ok = b1 <= 0x8F
                default: ok = true  // a continuation byte, checked above
                }
                if !ok { return 0 }
            }
            return have
        }
    }
}
