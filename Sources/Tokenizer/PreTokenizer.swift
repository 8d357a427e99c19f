/// Character classes the pre-tokenizer regexes use, per Unicode scalar.
///
/// llama.cpp classifies code points with tables generated from Unicode 15.1 (letters
/// \p{L}, numbers \p{N}, and the White_Space property for \s). Here the classes come
/// from the Swift standard library's Unicode data; scalars assigned after 15.1 are
/// treated as unassigned so that both agree.
enum CharClass {
    static let letter: UInt8 = 1
    static let number: UInt8 = 2
    static let space: UInt8 = 4
    /// Set for every in-range scalar; 0 means "past the end of the segment".
    static let present: UInt8 = 0x80

    /// Classes of U+0000...U+FFFF, built once.
    static let bmp: [UInt8] = {
        var t = [UInt8](repeating: present, count: 0x10000)
        for v in 0..<0x10000 {
            if let s = Unicode.Scalar(UInt32(v)) { t[v] = compute(s) }
        }
        return t
    }()

    @inline(__always)
    static func of(_ v: UInt32) -> UInt8 {
        if v < 0x10000 { return bmp[Int(v)] }
        guard let s = Unicode.Scalar(v) else { return present }
        return compute(s)
    }

    static func compute(_ s: Unicode.Scalar) -> UInt8 {
        var f = present
        if isWhiteSpace(s.value) { f |= space }
        let p = s.properties
        guard let age = p.age, age.major < 15 || (age.major == 15 && age.minor <= 1) else { return f }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            f |= letter
        case .decimalNumber, .letterNumber, .otherNumber:
            f |= number
        default:
            break
        }
        return f
    }

    /// The Unicode White_Space property (what \s matches).
    @inline(__always)
    static func isWhiteSpace(_ v: UInt32) -> Bool {
        switch v {
        case 0x09...0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000...0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
            return true
        default:
            return false
        }
    }
}

/// Which regex pipeline splits text into words before BPE.
package enum PreTokenizerKind: String, Sendable {
    /// GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    case gpt2
    /// Every \p{N} on its own, then the GPT-2 regex (SmolLM, StarCoder, ...).
    case digitsThenGPT2
    /// Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
    case llama3
}

/// Splits UTF-8 text into pre-tokenizer words (byte ranges), as llama.cpp's
/// unicode_regex_split does for the supported pre-tokenizer types.
struct PreTokenizer {
    let kind: PreTokenizerKind

    /// Decoded text: scalar values, their classes, and where each starts in the bytes.
    struct Scalars {
        var values: [UInt32] = []
        var classes: [UInt8] = []
        var starts: [Int32] = []

        /// False when the bytes are not exactly the UTF-8 of `values` (invalid or
        /// overlong sequences); the text to tokenize is then `reencoded()`.
        var canonical = true

        /// Decodes as llama.cpp's unicode_cpt_from_utf8 does: continuation bytes are
        /// checked but not overlong forms or ranges; each byte that starts no sequence
        /// becomes U+FFFD.
        init(_ bytes: UnsafeBufferPointer<UInt8>) {
            let n = bytes.count
            values.reserveCapacity(n)
            classes.reserveCapacity(n)
            starts.reserveCapacity(n + 1)
            @inline(__always) func cont(_ i: Int) -> Bool { bytes[i] & 0xC0 == 0x80 }
            var i = 0
            while i < n {
                let b0 = bytes[i]
                var v: UInt32 = 0xFFFD
                var len = 1
                if b0 < 0x80 {
                    v = UInt32(b0)
                } else if b0 & 0x40 == 0 {
                    canonical = false
                } else if b0 & 0x20 == 0 {
                    if i + 1 < n && cont(i + 1) {
                        v = (UInt32(b0 & 0x1F) << 6) | UInt32(bytes[i + 1] & 0x3F)
                        len = 2
                        if v < 0x80 { canonical = false }
                    } else {
                        canonical = false
                    }
                } else if b0 & 0x10 == 0 {
                    if i + 2 < n && cont(i + 1) && cont(i + 2) {
                        v = (UInt32(b0 & 0x0F) << 12) | (UInt32(bytes[i + 1] & 0x3F) << 6) | UInt32(bytes[i + 2] & 0x3F)
                        len = 3
                        if v < 0x800 { canonical = false }
                    } else {
                        canonical = false
                    }
                } else if b0 & 0x08 == 0 {
                    if i + 3 < n && cont(i + 1) && cont(i + 2) && cont(i + 3) {
                        v = (UInt32(b0 & 0x07) << 18) | (UInt32(bytes[i + 1] & 0x3F) << 12)
                            | (UInt32(bytes[i + 2] & 0x3F) << 6) | UInt32(bytes[i + 3] & 0x3F)
                        len = 4
                        if v < 0x10000 || v > 0x10FFFF { canonical = false }
                    } else {
                        canonical = false
                    }
                } else {
                    canonical = false
                }
                values.append(v)
                classes.append(v < 0x80 ? CharClass.bmp[Int(v)] : CharClass.of(v))
                starts.append(Int32(i))
                i += len
            }
            starts.append(Int32(n))
        }

        /// UTF-8 of `values` (what llama.cpp tokenizes after decoding); scalars past
        /// U+10FFFF, which llama.cpp cannot encode, become U+FFFD.
        func reencoded() -> [UInt8] {
            var out: [UInt8] = []
            out.reserveCapacity(values.count + 8)
            for v in values { ByteLevel.appendUTF8(v > 0x10FFFF ? 0xFFFD : v, to: &out) }
            return out
        }
    }

    /// Word boundaries as scalar indices: word k spans ends[k-1]..<ends[k] (ends[-1] = 0).
    func split(_ s: Scalars) -> [Int32] {
        let n = s.values.count
        var ends: [Int32] = []
        ends.reserveCapacity(n / 3 + 4)
        guard n > 0 else { return ends }
        s.values.withUnsafeBufferPointer { cp in
            s.classes.withUnsafeBufferPointer { cl in
                switch kind {
                case .gpt2:
                    Self.gpt2(cp, cl, 0, n, &ends)
                case .llama3:
                    Self.llama3(cp, cl, 0, n, &ends)
                case .digitsThenGPT2:
                    // First pass: each \p{N} scalar is a segment; so is each run between.
                    var start = 0
                    var i = 0
                    while i < n {
                        if cl[i] & CharClass.number != 0 {
                            if i > start { Self.gpt2(cp, cl, start, i, &ends) }
                            Self.gpt2(cp, cl, i, i + 1, &ends)
                            start = i + 1
                        }
                        i += 1
                    }
                    if start < n { Self.gpt2(cp, cl, start, n, &ends) }
                }
            }
        }
        return ends
    }

    // MARK: GPT-2

    /// GPT-2 regex over the segment lo..<hi; appends word ends.
    static func gpt2(_ cp: UnsafeBufferPointer<UInt32>, _ cl: UnsafeBufferPointer<UInt8>,
                     _ lo: Int, _ hi: Int, _ ends: inout [Int32]) {
        @inline(__always) func cls(_ i: Int) -> UInt8 { i < hi ? cl[i] : 0 }
        let notWord = CharClass.space | CharClass.letter | CharClass.number
        var pos = lo
        while pos < hi {
            let c = cp[pos]
            let f = cl[pos]
            // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive)
            if c == 0x27, pos + 1 < hi {
                let c1 = cp[pos + 1]
                if c1 == 0x73 || c1 == 0x74 || c1 == 0x6D || c1 == 0x64 {  // s t m d
                    pos += 2
                    ends.append(Int32(pos))
                    continue
                }
                if pos + 2 < hi {
                    let c2 = cp[pos + 2]
                    if (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C) {  // re ve ll
                        pos += 3
                        ends.append(Int32(pos))
                        continue
                    }
                }
            }
            let lead = c == 0x20
            let f2 = lead ? cls(pos + 1) : f
            // ' ?\p{L}+', ' ?\p{N}+'
            if f2 & CharClass.letter != 0 || f2 & CharClass.number != 0 {
                let want = f2 & CharClass.letter != 0 ? CharClass.letter : CharClass.number
                if lead { pos += 1 }
                while cls(pos) & want != 0 { pos += 1 }
                ends.append(Int32(pos))
                continue
            }
            // ' ?[^\s\p{L}\p{N}]+'
            if f2 & notWord == 0 && f2 != 0 {
                if lead { pos += 1 }
                while true {
                    let g = cls(pos)
                    if g & notWord != 0 || g == 0 { break }
                    pos += 1
                }
                ends.append(Int32(pos))
                continue
            }
            var nws = 0
            while cls(pos + nws) & CharClass.space != 0 { nws += 1 }
            if nws > 1 && pos + nws < hi {
                // '\s+(?!\S)': leave the last space to lead the next word
                pos += nws - 1
            } else if nws > 0 {
                pos += nws
            } else {
                pos += 1
            }
            ends.append(Int32(pos))
        }
    }

    // MARK: Llama 3

    @inline(__always)
    static func asciiLower(_ c: UInt32) -> UInt32 { (c >= 0x41 && c <= 0x5A) ? c + 32 : c }

    static func llama3(_ cp: UnsafeBufferPointer<UInt32>, _ cl: UnsafeBufferPointer<UInt8>,
                       _ lo: Int, _ hi: Int, _ ends: inout [Int32]) {
        @inline(__always) func cls(_ i: Int) -> UInt8 { i < hi ? cl[i] : 0 }
        @inline(__always) func scalar(_ i: Int) -> UInt32 { i < hi ? cp[i] : 0xFFFF_FFFF }
        let notWord = CharClass.space | CharClass.letter | CharClass.number
        var pos = lo
        while pos < hi {
            let c = cp[pos]
            let f = cl[pos]
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if c == 0x27, pos + 1 < hi {
                let c1 = asciiLower(cp[pos + 1])
                if c1 == 0x73 || c1 == 0x74 || c1 == 0x6D || c1 == 0x64 {
                    pos += 2
                    ends.append(Int32(pos))
                    continue
                }
                if pos + 2 < hi {
                    let c2 = asciiLower(cp[pos + 2])
                    if (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C) {
                        pos += 3
                        ends.append(Int32(pos))
                        continue
                    }
                }
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(c == 0x0D || c == 0x0A || f & CharClass.number != 0) {
                if f & CharClass.letter != 0 || cls(pos + 1) & CharClass.letter != 0 {
                    pos += 1
                    while cls(pos) & CharClass.letter != 0 { pos += 1 }
                    ends.append(Int32(pos))
                    continue
                }
            }
            // \p{N}{1,3}
            if f & CharClass.number != 0 {
                var start = pos
                while cls(pos) & CharClass.number != 0 {
                    pos += 1
                    if pos - start >= 3 {
                        ends.append(Int32(pos))
                        start = pos
                    }
                }
                if pos > start { ends.append(Int32(pos)) }
                continue
            }
            // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
            let lead = c == 0x20
            let f2 = lead ? cls(pos + 1) : f
            if f2 & notWord == 0 && f != 0 {
                if lead { pos += 1 }
                while true {
                    let g = cls(pos)
                    if g & notWord != 0 || g == 0 { break }
                    pos += 1
                }
                while true {
                    let c2 = scalar(pos)
                    if c2 != 0x0D && c2 != 0x0A { break }
                    pos += 1
                }
                ends.append(Int32(pos))
                continue
            }
            var nws = 0
            var lastNewline = -1
            while cls(pos + nws) & CharClass.space != 0 {
                let c2 = cp[pos + nws]
                if c2 == 0x0D || c2 == 0x0A { lastNewline = pos + nws + 1 }
                nws += 1
            }
            if lastNewline >= 0 {
                // '\s*[\r\n]+'
                pos = lastNewline
            } else if nws > 1 && pos + nws < hi {
                pos += nws - 1
            } else if nws > 0 {
                pos += nws
            } else {
                pos += 1
            }
            ends.append(Int32(pos))
        }
    }
}
