import BCCore
import BCFormats
import BCKernels
import CSupport
import Testing

/// The decode kernels of CSupport/quant_rows.h (8 weight rows × one token, AVX-512 VNNI)
/// against the one-row kernels of quant_dot.h, bit for bit, on fresh random blocks:
/// rows taken at a stride wider than a row, 1 to 48 blocks per row (the model's 576- and
/// 1,536-wide rows are 18 and 48 blocks). Equal bits are the batch-invariance promise: a
/// decoded token's logits do not depend on whether its rows ran here or in a prefill tile.
@Suite struct QuantDecodeKernelTests {
    @Test(arguments: QuantKernelTests.legacy)
    func rows8MatchOneRowKernelBitForBit(_ format: QuantFormat) throws {
        guard QuantGEMM.hasAVX512 else { return }
        var g = SplitMix64(state: 0xDEC0DE &+ UInt64(format.rawValue))
        for nb in [1, 2, 7, 18, 48] {
            let cols = 32 * nb, rows = 11  // rows 0..7 and 3..10 (an odd first row)
            let bytes = QuantKernelTests.randomBlocks(format, rows: rows, cols: cols, &g)
            let w = try bytes.withUnsafeBytes { try QuantizedWeights(format: format, rows: rows, cols: cols, bytes: $0) }
            let x = QuantKernelTests.randomActivations(cols, &g)
            var act = [bc_q8a_block](repeating: bc_q8a_block(), count: nb)
            x.withUnsafeBufferPointer { bc_quant_q8a_row($0.baseAddress!, &act, Int64(nb)) }
            let rowBytes = w.segments[0].rowBytes
            for first in [0, 3] {
                var out = [Float](repeating: .nan, count: 10)
                bytes.withUnsafeBytes { raw in
                    let base = raw.bindMemory(to: UInt8.self).baseAddress! + first * rowBytes
                    act.withUnsafeBufferPointer { ab in
                        let a = ab.baseAddress!, ldw = Int64(rowBytes), n = Int64(nb)
                        out.withUnsafeMutableBufferPointer { o in
                            let dst = o.baseAddress! + 1  // out[0] and out[9] must stay untouched
                            switch format {
                            case .q8_0: bc_quant_rows8_q8_0_avx512(base, ldw, a, n, dst)
                            case .q4_0: bc_quant_rows8_q4_0_avx512(base, ldw, a, n, dst)
                            default: bc_quant_rows8_q4_1_avx512(base, ldw, a, n, dst)
                            }
                        }
                        for r in 0..<8 {
                            let row = base + r * rowBytes
                            let want: Float
                            switch format {
                            case .q8_0: want = bc_quant_dot_q8_0(row, a, n)
                            case .q4_0: want = bc_quant_dot_q4_0(row, a, n)
                            default: want = bc_quant_dot_q4_1(row, a, n)
                            }
                            #expect(out[1 + r].bitPattern == want.bitPattern && want.isFinite && want != 0,
                                    "\(format.name) nb \(nb) rows from \(first), row \(r): \(out[1 + r]) vs \(want)")
                        }
                    }
                }
                #expect(out[0].isNaN && out[9].isNaN, "writes only its 8 outputs")
            }
        }
    }
}
