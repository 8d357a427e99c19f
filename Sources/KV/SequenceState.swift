import BCCore
#if canImport(Glibc)
import Glibc
#endif

/// What a sequence state records of the model it was computed with: a state loads
/// only into a cache of a model with the same values.
package struct KVModelFingerprint: Equatable, Sendable {
    package var vocabSize: Int
    package var layerCount: Int
    package var embeddingDim: Int

    package init(vocabSize: Int, layerCount: Int, embeddingDim: Int) {
        self.vocabSize = vocabSize
        self.layerCount = layerCount
        self.embeddingDim = embeddingDim
    }
}

/// Export/import of one sequence of a paged KV cache, so a conversation can be parked
/// on disk and resumed later (in this or another process) exactly where it stopped.
///
/// Format (version 1), all integers and floats little-endian:
///   "BCKVSEQ\0"  u32 version
///   fingerprint: u32 n_vocab  u32 n_layer  u32 n_embd  u32 kvDim  u32 storage type
///                u32 block size  u32 layer count, per layer: u32 kind (0 full,
///                1 sliding, 2 shared) + u32 argument (0, the window, the source layer)
///   sequence:    u64 adapter id  u32 length  length × i32 tokens
///   rows:        per storing layer (layers that are not shared, in layer order):
///                u32 first position f, then (length - f) key rows and (length - f)
///                value rows of kvDim float32 each — the DEQUANTIZED rows (exact for
///                f32 storage; re-encoded on load for quantized storage). f is 0 for
///                full attention; a sliding-window layer starts at the first block a
///                future query can still see.
///   u32 CRC-32 of every byte before it.
/// Loading validates every field before it touches the cache: the checksum; the
/// fingerprint (model values, kvDim, storage type, block size, every layer's kind and
/// argument) byte for byte against this cache's; the length against the context
/// (`maxLength`); every token against the vocabulary; each storing layer's first
/// position against what a future query needs (`firstHeld`); every row value finite
/// and, for f16 storage, within the f16 range (a saved f16 row never exceeds it); no
/// trailing bytes. The adapter id is an opaque caller value (any u64). It loads only
/// into an empty sequence, and either completes or leaves the cache as it was
/// (existence, length and adapter id of the target sequence included).
extension PagedKVCache {
    static let sequenceStateMagic: [UInt8] = Array("BCKVSEQ\0".utf8)
    static let sequenceStateVersion: UInt32 = 1

    private static func layerCode(_ kind: LayerAttention) -> (UInt32, UInt32) {
        switch kind {
        case .full: (0, 0)
        case .sliding(let w): (1, UInt32(w))
        case .shared(let s): (2, UInt32(s))
        }
    }

    private func storingLayers() -> [Int] {
        layout.layers.indices.filter { if case .shared = layout.layers[$0] { return false } else { return true } }
    }

    /// The first position a layer must hold for a sequence of `length` positions: 0 for
    /// full attention, the start of the first block a future query can see for a window.
    private func firstHeld(layer: Int, length: Int) -> Int {
        guard let w = layout.window(of: layer) else { return 0 }
        let firstVisible = max(0, length - w + 1)
        return min(length, firstVisible / blockSize * blockSize)
    }

    private var fingerprintBytes: Int { 4 * 7 + 8 * layout.layers.count }

    private func writeFingerprint(_ w: inout ByteWriter, _ model: KVModelFingerprint) {
        w.u32(UInt32(truncatingIfNeeded: model.vocabSize))
        w.u32(UInt32(truncatingIfNeeded: model.layerCount))
        w.u32(UInt32(truncatingIfNeeded: model.embeddingDim))
        w.u32(UInt32(kvDim))
        w.u32(UInt32(bitPattern: layout.storage.rawValue))
        w.u32(UInt32(blockSize))
        w.u32(UInt32(layout.layers.count))
        for kind in layout.layers {
            let (code, arg) = Self.layerCode(kind)
            w.u32(code)
            w.u32(arg)
        }
    }

    /// Size in bytes of the state `saveSequenceState` would produce now.
    package func sequenceStateSize(_ sequence: Int, model: KVModelFingerprint) throws -> Int {
        guard let seq = sequenceRecord(sequence) else {
            throw BatchCoreError(.notFound, "sequence \(sequence) does not exist")
        }
        let length = seq.length
        var n = 8 + 4 + fingerprintBytes + 8 + 4 + 4 * length
        for l in storingLayers() { n += 4 + 2 * (length - firstHeld(layer: l, length: length)) * kvDim * 4 }
        return n + 4
    }

    /// Serializes one sequence (tokens and every cached K/V row a future step needs).
    package func saveSequenceState(_ sequence: Int, model: KVModelFingerprint) throws -> [UInt8] {
        guard let seq = sequenceRecord(sequence) else {
            throw BatchCoreError(.notFound, "sequence \(sequence) does not exist")
        }
        let length = seq.length
        guard seq.tokens.count >= length else {
            throw BatchCoreError(.internal, "sequence \(sequence) records \(seq.tokens.count) tokens for \(length) positions")
        }
        var w = ByteWriter()
        w.raw(Self.sequenceStateMagic)
        w.u32(Self.sequenceStateVersion)
        writeFingerprint(&w, model)
        w.u64(seq.adapter)
        w.u32(UInt32(length))
        for t in seq.tokens[0..<length] { w.u32(UInt32(bitPattern: t)) }
        for l in storingLayers() {
            let first = firstHeld(layer: l, length: length)
            w.u32(UInt32(first))
            guard first < length else { continue }
            // The segments must hold every row of first..<length, contiguously in order.
            let segs = try segments(layer: l, sequence: sequence, length: length)
            var covered = first
            for s in segs where s.start + s.count > first {
                let skip = max(0, first - s.start)
                guard s.start + skip == covered else {
                    throw BatchCoreError(.internal, "sequence \(sequence), layer \(l): rows \(covered)..<\(s.start + skip) are not cached")
                }
                covered = s.start + s.count
            }
            guard covered == length else {
                throw BatchCoreError(.internal, "sequence \(sequence), layer \(l): rows \(covered)..<\(length) are not cached")
            }
            for values in [false, true] {
                for s in segs where s.start + s.count > first {
                    let skip = max(0, first - s.start)
                    let base = (values ? s.values : s.keys) + skip * kvDim
                    w.floats(base, (s.count - skip) * kvDim)
                }
            }
        }
        let crc = w.bytes.withUnsafeBytes { CRC32.checksum($0) }
        w.u32(crc)
        return w.bytes
    }

    /// Loads a state into `sequence`, which must be absent or empty. A corrupt,
    /// truncated or mismatched state throws `.format`; no room throws `.kvFull`; a
    /// sequence that is not empty throws `.badState`. On any error nothing changed.
    package func loadSequenceState(_ sequence: Int, from bytes: UnsafeRawBufferPointer, model: KVModelFingerprint) throws {
        let what = "sequence state"
        guard bytes.count >= 8 + 4 + 4 else { throw BatchCoreError.format("\(what): too short (\(bytes.count) bytes)") }
        guard Array(bytes[0..<8]) == Self.sequenceStateMagic else {
            throw BatchCoreError.format("\(what): not a batchcore sequence state (bad magic)")
        }
        let body = UnsafeRawBufferPointer(rebasing: bytes[0..<bytes.count - 4])
        let stored = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: bytes.count - 4, as: UInt32.self))
        guard CRC32.checksum(body) == stored else { throw BatchCoreError.format("\(what): checksum mismatch (corrupt or truncated)") }
        var r = ByteReader(body, what: what)
        _ = try r.raw(8)
        let version = try r.u32()
        guard version == Self.sequenceStateVersion else { throw BatchCoreError.format("\(what): unsupported version \(version)") }

        // Fingerprint: everything that must match.
        var expect = ByteWriter()
        writeFingerprint(&expect, model)
        let saved = try r.raw(fingerprintBytes)
        guard Array(saved) == expect.bytes else {
            throw BatchCoreError.format("\(what): saved with a different model or KV layout (\(describeFingerprint(saved))) than this context's (\(describeFingerprint(expect.bytes)))")
        }

        let adapter = try r.u64()
        let total = Int(try r.u32())
        guard total <= maxLength else {
            throw BatchCoreError(.kvFull, "\(what): holds \(total) positions, this context allows \(maxLength)")
        }
        try r.need(4 * total)
        var tokens = [Int32](repeating: 0, count: total)
        for i in 0..<total {
            let t = Int32(bitPattern: try r.u32())
            guard t >= 0, Int(t) < model.vocabSize else { throw BatchCoreError.format("\(what): token \(t) at position \(i) is outside the vocabulary") }
            tokens[i] = t
        }
        // Row ranges: one per storing layer, validated before anything changes.
        let layers = storingLayers()
        var plan: [(layer: Int, first: Int, offset: Int)] = []
        let rowBytes = kvDim * 4
        for l in layers {
            let first = Int(try r.u32())
            guard first <= firstHeld(layer: l, length: total) else {
                throw BatchCoreError.format("\(what): layer \(l) starts at position \(first), it must hold every position from \(firstHeld(layer: l, length: total))")
            }
            let rows = total - first
            plan.append((l, first, r.offset))
            let (nbytes, overflow) = (2 * rows).multipliedReportingOverflow(by: rowBytes)
            guard !overflow else { throw BatchCoreError.format("\(what): layer \(l): row count overflows") }
            let data = try r.raw(nbytes)
            // Non-finite keys/values are never produced by a model: treat them as corruption.
            // f16 storage saves its (decoded) rows, so a larger magnitude is corruption too
            // (it would be stored as Inf and turn attention into NaN).
            let limit: Float = layout.storage == .f16 ? Float(Float16.greatestFiniteMagnitude) : .greatestFiniteMagnitude
            for i in 0..<2 * rows * kvDim {
                let x = Float(bitPattern: UInt32(littleEndian: data.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                guard x.isFinite else { throw BatchCoreError.format("\(what): layer \(l) holds a non-finite value") }
                guard abs(x) <= limit else {
                    throw BatchCoreError.format("\(what): layer \(l) holds \(x), outside the range of \(layout.storage) storage")
                }
            }
        }
        guard r.remaining == 0 else { throw BatchCoreError.format("\(what): \(r.remaining) unexpected trailing bytes") }

        // The target must be empty.
        let existed = contains(sequence)
        let oldAdapter = sequenceRecord(sequence)?.adapter ?? 0
        guard length(of: sequence) == 0 else {
            throw BatchCoreError.badState("sequence \(sequence) is not empty (\(length(of: sequence)) positions): load into a new sequence")
        }
        if total == 0 {
            try reserve(sequence: sequence, length: 0)
            sequenceRecord(sequence)?.adapter = adapter
            return
        }

        // Layouts with windows release blocks as the sequence grows: fill them one block
        // at a time, like decode would (prefix caching is off there, so a failure is
        // undone by dropping the sequence). Otherwise: one reservation, then writes.
        let chunk = groups.contains { $0.window != nil } ? blockSize : total
        var keys = [Float](repeating: 0, count: kvDim), values = [Float](repeating: 0, count: kvDim)
        var done = 0
        while done < total {
            let end = min(total, done + chunk)
            do {
                try reserve(sequence: sequence, length: end)
            } catch {
                if done > 0 { undoPartialLoad(sequence, existed: existed, adapter: oldAdapter) }
                throw error
            }
            if done == 0 { sequenceRecord(sequence)?.adapter = adapter }
            for p in done..<end {
                for item in plan where p >= item.first {
                    let rows = total - item.first
                    let kOff = item.offset + (p - item.first) * rowBytes
                    let vOff = kOff + rows * rowBytes
                    keys.withUnsafeMutableBufferPointer { k in
                        values.withUnsafeMutableBufferPointer { v in
                            for i in 0..<kvDim {
                                k[i] = Float(bitPattern: UInt32(littleEndian: body.loadUnaligned(fromByteOffset: kOff + 4 * i, as: UInt32.self)))
                                v[i] = Float(bitPattern: UInt32(littleEndian: body.loadUnaligned(fromByteOffset: vOff + 4 * i, as: UInt32.self)))
                            }
                            write(layer: item.layer, sequence: sequence, position: p, keys: k.baseAddress!, values: v.baseAddress!)
                        }
                    }
                }
                record(sequence: sequence, position: p, token: tokens[p])
            }
            commit(sequence: sequence, length: end)
            done = end
        }
    }

    /// Takes a partly loaded sequence back to what it was before the load: absent, or
    /// empty with its adapter id.
    private func undoPartialLoad(_ sequence: Int, existed: Bool, adapter: UInt64) {
        guard existed else { return remove(sequence: sequence) }
        do {
            // Cutting to length 0 keeps no rows of a cut block, so it needs no memory
            // and does not fail.
            try truncate(sequence: sequence, length: 0)
            sequenceRecord(sequence)?.adapter = adapter
        } catch {
            // Should it ever fail, drop the sequence rather than keep part of a load.
            remove(sequence: sequence)
        }
    }

    private func describeFingerprint<B: Collection>(_ bytes: B) -> String where B.Element == UInt8 {
        let b = Array(bytes)
        guard b.count >= 28 else { return "?" }
        func u(_ i: Int) -> UInt32 { UInt32(b[4 * i]) | UInt32(b[4 * i + 1]) << 8 | UInt32(b[4 * i + 2]) << 16 | UInt32(b[4 * i + 3]) << 24 }
        var s = "n_vocab \(u(0)), n_layer \(u(1)), n_embd \(u(2)), kv dim \(u(3)), storage \(u(4)), block size \(u(5))"
        let layers = Int(u(6))
        if b.count >= 28 + 8 * layers {
            let kinds = (0..<layers).map { i -> String in
                let code = u(7 + 2 * i), arg = u(8 + 2 * i)
                switch code {
                case 0: return "full"
                case 1: return "window \(arg)"
                default: return "shares \(arg)"
                }
            }
            s += ", layers [\(kinds.joined(separator: ", "))]"
        }
        return s
    }

    /// Saves to `path` through a temporary file renamed into place.
    package func saveSequenceState(_ sequence: Int, model: KVModelFingerprint, to path: String) throws {
        try writeAtomically(path, bytes: try saveSequenceState(sequence, model: model))
    }

    /// The largest state this cache could ever load (longer files are rejected unread).
    private var maxSequenceStateSize: Int {
        let positions = min(maxLength, 1 << 24)
        let perPosition = 4 + storingLayers().count * 2 * kvDim * 4
        return 8 + 4 + fingerprintBytes + 8 + 4 + storingLayers().count * 4 + 4 + positions.multipliedReportingOverflow(by: perPosition).partialValue
    }

    package func loadSequenceState(_ sequence: Int, model: KVModelFingerprint, from path: String) throws {
        let bytes = try readWholeFile(path, limit: maxSequenceStateSize, larger: "any sequence state of this context")
        try bytes.withUnsafeBytes { try loadSequenceState(sequence, from: $0, model: model) }
    }
}
