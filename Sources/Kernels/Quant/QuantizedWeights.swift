import BCCore
#if canImport(Glibc)
import Glibc
#endif

/// A ggml block format the quantized kernels read directly (`QuantGEMM`). Raw values
/// are ggml's type ids.
package enum QuantFormat: UInt32, CaseIterable, Sendable {
    case q4_0 = 2
    case q4_1 = 3
    case q8_0 = 8

    /// Values per block.
    package static let blockValues = 32

    /// Bytes per block of 32 values (see `Sources/CSupport/include/quant_dot.h`).
    package var blockBytes: Int {
        switch self {
        case .q4_0: 18
        case .q4_1: 20
        case .q8_0: 34
        }
    }

    package var name: String {
        switch self {
        case .q4_0: "Q4_0"
        case .q4_1: "Q4_1"
        case .q8_0: "Q8_0"
        }
    }
}

/// A weight matrix W[rows × cols] (row o = output feature o) kept in a ggml block
/// format: row r is cols/32 consecutive blocks at `data + r·rowBytes`, exactly the
/// bytes of a GGUF tensor [cols, rows]. No float copy exists; rows are dequantized on
/// demand (`copyRow`) and products quantize the activations instead (`QuantGEMM`).
/// Immutable after init.
package final class QuantizedWeights: @unchecked Sendable {
    package let format: QuantFormat
    package let rows: Int
    package let cols: Int
    /// Blocks per row (cols / 32).
    package let blocksPerRow: Int
    /// Bytes per row.
    package let rowBytes: Int
    /// rows × rowBytes bytes, 64-byte aligned (2 MiB when large, see `Memory`).
    package let data: UnsafeMutableRawPointer

    /// Bytes held (the block data).
    package var byteCount: Int { rows * rowBytes }

    /// An uninitialised matrix; `fill` writes its rows × rowBytes bytes. Throws
    /// `.invalidArgument` unless cols is a positive multiple of 32 and rows ≥ 0, and
    /// `.outOfMemory` when the buffer cannot be allocated.
    package init(format: QuantFormat, rows: Int, cols: Int, fill: (UnsafeMutableRawPointer) throws -> Void) throws {
        guard rows >= 0, cols > 0, cols % QuantFormat.blockValues == 0 else {
            throw BatchCoreError.invalid("\(format.name) matrix \(rows) × \(cols): cols must be a positive multiple of 32")
        }
        let nb = cols / QuantFormat.blockValues
        let (total, overflow) = rows.multipliedReportingOverflow(by: nb * format.blockBytes)
        guard !overflow, total < Int.max - 4 else { throw BatchCoreError.invalid("\(format.name) matrix \(rows) × \(cols) is too large") }
        let buffer = UnsafeMutableRawPointer(try Memory.allocateFloats((total + 3) / 4, fill: 0))
        do { try fill(buffer) } catch {
            free(buffer)
            throw error
        }
        self.format = format
        self.rows = rows
        self.cols = cols
        blocksPerRow = nb
        rowBytes = nb * format.blockBytes
        data = buffer
    }

    /// Copies `bytes` (rows × rowBytes of blocks, extra bytes ignored). Throws
    /// `.invalidArgument` when `bytes` is too short.
    package convenience init(format: QuantFormat, rows: Int, cols: Int, bytes: UnsafeRawBufferPointer) throws {
        try self.init(format: format, rows: rows, cols: cols) { dst in
            let need = rows * (cols / QuantFormat.blockValues) * format.blockBytes
            guard bytes.count >= need else {
                throw BatchCoreError.invalid("\(format.name) matrix \(rows) × \(cols) needs \(need) bytes, got \(bytes.count)")
            }
            if need > 0, let src = bytes.baseAddress { dst.copyMemory(from: src, byteCount: need) }
        }
    }

    deinit { free(data) }

    /// Row `r` (cols floats) dequantized to `out`: the exact values the blocks encode.
    package func copyRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        let row = UnsafeRawPointer(data + r * rowBytes)
        for b in 0..<blocksPerRow {
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
