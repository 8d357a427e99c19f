import BCCore
import CSupport
#if canImport(Glibc)
import Glibc
#endif

/// A ggml block format the quantized kernels read directly (`QuantGEMM`). Raw values
/// are ggml's type ids.
package enum QuantFormat: UInt32, CaseIterable, Sendable {
    /// IEEE half / bfloat16 values, 16-bit resident; handled as blocks of 32 values
    /// (64 bytes) so every format shares the activation blocks' granularity.
    case f16 = 1
    case bf16 = 30
    case q4_0 = 2
    case q4_1 = 3
    case q5_0 = 6
    case q5_1 = 7
    case q8_0 = 8
    case q4_K = 12
    case q5_K = 13
    case q6_K = 14

    /// Values per block: 32, or 256 for the k-quants.
    package var blockValues: Int {
        switch self {
        case .q4_K, .q5_K, .q6_K: 256
        default: 32
        }
    }

    /// Bytes per block (see `Sources/CSupport/include/quant_dot.h` and `quant_kdot.h`).
    package var blockBytes: Int {
        switch self {
        case .f16, .bf16: 64
        case .q4_0: 18
        case .q4_1: 20
        case .q5_0: 22
        case .q5_1: 24
        case .q8_0: 34
        case .q4_K: 144
        case .q5_K: 176
        case .q6_K: 210
        }
    }

    package var name: String {
        switch self {
        case .f16: "F16"
        case .bf16: "BF16"
        case .q4_0: "Q4_0"
        case .q4_1: "Q4_1"
        case .q5_0: "Q5_0"
        case .q5_1: "Q5_1"
        case .q8_0: "Q8_0"
        case .q4_K: "Q4_K"
        case .q5_K: "Q5_K"
        case .q6_K: "Q6_K"
        }
    }

    /// The format's id in quant_kdot.h (`BC_KQ_*`), or nil for Q8_0/Q4_0/Q4_1 (quant_dot.h).
    package var kdotID: Int32? {
        switch self {
        case .q5_0: 0
        case .q5_1: 1
        case .q4_K: 2
        case .q5_K: 3
        case .q6_K: 4
        default: nil
        }
    }

    /// Whether products read float32 activations (F16, BF16: `bc_hq_dot` in
    /// quant_hdot.h) rather than int8 activation blocks.
    package var isFloat: Bool { self == .f16 || self == .bf16 }

    /// Whether products read activations quantized as llama.cpp's q8_K (one float32
    /// scale per 256 values, `bc_quant_q8k_row`: the k-quants) rather than its q8_0/q8_1
    /// (one f16 scale per 32, `bc_quant_q8a_row`).
    package var usesQ8K: Bool { blockValues == 256 }
}

/// A weight matrix W[rows × cols] (row o = output feature o) kept in ggml block formats:
/// a stack of row ranges (`segments`, e.g. the q, k and v projections of one layer), each
/// in one format, row r of a segment being cols/blockValues consecutive blocks at
/// `data + segment.offset + (r − segment.firstRow)·segment.rowBytes` — exactly the bytes
/// of a GGUF tensor [cols, rows]. No float copy exists; rows are dequantized on demand
/// (`copyRow`) and products quantize the activations instead (`QuantGEMM`). Immutable
/// after init.
package final class QuantizedWeights: @unchecked Sendable {
    /// Rows firstRow ..< firstRow + rows in `format`, their bytes at data + offset.
    package struct Segment: Sendable {
        package let format: QuantFormat
        package let firstRow: Int
        package let rows: Int
        package let offset: Int
        package let rowBytes: Int
        /// Blocks per row.
        package let blocksPerRow: Int
    }

    package let segments: [Segment]
    package let rows: Int
    package let cols: Int
    /// The segments' bytes, contiguous, 64-byte aligned (2 MiB when large, see `Memory`).
    package let data: UnsafeMutableRawPointer

    /// The format of the first segment (of all rows when there is one segment).
    package var format: QuantFormat { segments[0].format }

    /// Bytes held (the block data).
    package var byteCount: Int { segments.reduce(0) { $0 + $1.rows * $1.rowBytes } }

    /// Bytes held per format name, in segment order ("Q4_K", 1234), each name once.
    package var bytesByFormat: [(type: String, bytes: Int)] {
        var out: [(type: String, bytes: Int)] = []
        for s in segments {
            if let i = out.firstIndex(where: { $0.type == s.format.name }) { out[i].bytes += s.rows * s.rowBytes }
            else { out.append((s.format.name, s.rows * s.rowBytes)) }
        }
        return out
    }

    /// The type name: "Q4_K", or the distinct formats joined by "+" ("Q5_0+Q8_0").
    package var typeName: String { bytesByFormat.map(\.type).joined(separator: "+") }

    /// An uninitialised stack of `parts` (format, rows) sharing `cols`; `fill` writes the
    /// parts' bytes one after the other (part p's rows × rowBytes at the sum of the
    /// earlier parts' sizes). Throws `.invalidArgument` unless there is a part, cols is a
    /// positive multiple of every part's block size and rows ≥ 0, and `.outOfMemory` when
    /// the buffer cannot be allocated.
    package init(parts: [(format: QuantFormat, rows: Int)], cols: Int, fill: (UnsafeMutableRawPointer) throws -> Void) throws {
        guard !parts.isEmpty else { throw BatchCoreError.invalid("a quantized matrix needs at least one part") }
        var segments: [Segment] = [], total = 0, rows = 0
        for (format, r) in parts {
            guard r >= 0, cols > 0, cols % format.blockValues == 0 else {
                throw BatchCoreError.invalid("\(format.name) matrix \(r) × \(cols): cols must be a positive multiple of \(format.blockValues)")
            }
            let nb = cols / format.blockValues
            let (bytes, o1) = r.multipliedReportingOverflow(by: nb * format.blockBytes)
            let (sum, o2) = total.addingReportingOverflow(bytes)
            guard !o1, !o2, sum < Int.max - 4 else { throw BatchCoreError.invalid("\(format.name) matrix \(r) × \(cols) is too large") }
            segments.append(Segment(format: format, firstRow: rows, rows: r, offset: total, rowBytes: nb * format.blockBytes, blocksPerRow: nb))
            total = sum
            rows += r
        }
        let buffer = UnsafeMutableRawPointer(try Memory.allocateFloats((total + 3) / 4, fill: 0))
        do { try fill(buffer) } catch {
            free(buffer)
            throw error
        }
        self.segments = segments
        self.rows = rows
        self.cols = cols
        data = buffer
    }

    /// One segment: rows × cols in `format`.
    package convenience init(format: QuantFormat, rows: Int, cols: Int, fill: (UnsafeMutableRawPointer) throws -> Void) throws {
        try self.init(parts: [(format, rows)], cols: cols, fill: fill)
    }

    /// Copies `bytes` (rows × rowBytes of blocks, extra bytes ignored). Throws
    /// `.invalidArgument` when `bytes` is too short.
    package convenience init(format: QuantFormat, rows: Int, cols: Int, bytes: UnsafeRawBufferPointer) throws {
        try self.init(format: format, rows: rows, cols: cols) { dst in
            let need = rows * (cols / format.blockValues) * format.blockBytes
            guard bytes.count >= need else {
                throw BatchCoreError.invalid("\(format.name) matrix \(rows) × \(cols) needs \(need) bytes, got \(bytes.count)")
            }
            if need > 0, let src = bytes.baseAddress { dst.copyMemory(from: src, byteCount: need) }
        }
    }

    deinit { free(data) }

    /// The segment holding row `r` (0 ≤ r < rows).
    @inline(__always)
    package func segment(of r: Int) -> Segment {
        var i = 0
        while i + 1 < segments.count && segments[i + 1].firstRow <= r { i += 1 }
        return segments[i]
    }

    /// Row `r` (cols floats) dequantized to `out`: the exact values the blocks encode.
    package func copyRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        let s = segment(of: r), format = s.format
        let row = UnsafeRawPointer(data + s.offset + (r - s.firstRow) * s.rowBytes)
        if format.isFloat {
            for k in 0..<cols {
                let bits = UInt16(littleEndian: row.loadUnaligned(fromByteOffset: 2 * k, as: UInt16.self))
                out[k] = format == .f16 ? Float(Float16(bitPattern: bits)) : Float(bitPattern: UInt32(bits) << 16)
            }
            return
        }
        if let id = format.kdotID {
            #if arch(x86_64)
            let bytes = row.assumingMemoryBound(to: UInt8.self)
            for b in 0..<s.blocksPerRow { bc_kq_dequant_block(id, bytes + b * format.blockBytes, out + b * format.blockValues) }
            #endif
            return
        }
        for b in 0..<s.blocksPerRow {
            let p = row + b * format.blockBytes, y = out + 32 * b
            let d = QuantBlock.half(p, 0)
            switch format {
            case .q8_0:
                for j in 0..<32 { y[j] = Float(p.load(fromByteOffset: 2 + j, as: Int8.self)) * d }
            case .q4_0:
                for j in 0..<16 {
                    let v = p.load(fromByteOffset: 2 + j, as: UInt8.self)
                    y[j] = Float(Int(v & 15) - 8) * d
                    y[j + 16] = Float(Int(v >> 4) - 8) * d
                }
            case .q4_1:
                let m = QuantBlock.half(p, 2)
                for j in 0..<16 {
                    let v = p.load(fromByteOffset: 4 + j, as: UInt8.self)
                    y[j] = Float(v & 15) * d + m
                    y[j + 16] = Float(v >> 4) * d + m
                }
            default: break  // the k-quant-style formats are handled above
            }
        }
    }
}

/// Block helpers shared by the quantized kernels.
package enum QuantBlock {
    /// The little-endian IEEE half at `p + offset`, as a float.
    @inline(__always)
    package static func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
        Float(Float16(bitPattern: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))))
    }
}
