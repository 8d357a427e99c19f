import BCCore
import BCKernels
import Foundation
import Testing

/// `QuantGEMM` against ggml's own quantized dot products on the same rows: fixtures from
/// tools/reference/ggml_vecdot_fixtures.py (Tests/fixtures/llama/quant/vecdot/: 16 activation
/// rows of 512 values, some blocks tiny enough that the f16 block scale is subnormal or 0;
/// per weight type 16 rows quantized by ggml and the 16 × 16 results of ggml's
/// quantize_row_q8_0/q8_1/q8_K + ggml_vec_dot_<type>_<q8> from the libggml-cpu.so of
/// llama-cpp-python 0.3.36).
///
/// - Q8_0, Q4_0, Q4_1, Q5_0, Q5_1: bit for bit. The activation blocks are ggml's (codes from
///   the float32 scale, d and s rounded to f16), and the float part is the same sequence of
///   operations (one fused multiply-add of d_w·d_a into 8 lanes per block, ascending, lanes
///   summed in the same pairs; Q4_1/Q5_1 add Σ m·s after). With float32 scales (the kernels
///   before) not one of these outputs was identical (`bench/README.md`, #15 fidelity).
/// - Q4_K, Q5_K, Q6_K: the same activation codes and scale (q8_K: one float32 d per 256) and
///   exact integer sums, but ggml sums a 256-value block's sub-block integers before one
///   float multiply-add while batchcore adds each 32-value sub-block in float: only float32
///   summation order differs, so |ours − ggml| ≤ 2·(nSub + 12)·2⁻²³·Σ|w·x| (each side's
///   accumulation bound as in KQuantKernelTests, nSub = 16 sub-blocks, Σ|w·x| over the
///   dequantized weights, ×2 slack for the int8 rounding of x inside |terms|). Per-32
///   activation scales (before) are off by the int8 rounding itself, ~1e-3 relative.
@Suite struct QuantGgmlBitTests {
    static let dir = Repo.path("Tests/fixtures/llama/quant/vecdot")
    static let cols = 512, rows = 16, tokens = 16

    static func floats(_ name: String) throws -> [Float] {
        let d = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(name).f32"))
        return d.withUnsafeBytes { b in
            (0..<(d.count / 4)).map { Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
    }

    /// ggml's results [t][r], ours (all tokens in one call with `kernel`, and each token
    /// alone), the weights and the activations.
    static func run(_ name: String, _ kernel: QuantGEMM.Kernel) throws
        -> (ggml: [Float], batch: [Float], alone: [Float], w: QuantizedWeights, x: [Float]) {
        let format = try #require(QuantFormat.allCases.first { $0.name == name })
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(name).bin")))
        let w = try bytes.withUnsafeBytes { try QuantizedWeights(format: format, rows: rows, cols: cols, bytes: $0) }
        let x = try floats("x"), ggml = try floats(name)
        #expect(x.count == tokens * cols && ggml.count == tokens * rows)
        var batch = [Float](repeating: .nan, count: tokens * rows), alone = batch
        x.withUnsafeBufferPointer { xb in
            batch.withUnsafeMutableBufferPointer {
                QuantGEMM.multiply(xb.baseAddress!, ldx: cols, tokens: tokens, w, $0.baseAddress!, ldy: rows, kernel: kernel)
            }
            alone.withUnsafeMutableBufferPointer { yb in
                for t in 0..<tokens {
                    QuantGEMM.multiply(xb.baseAddress! + t * cols, ldx: cols, tokens: 1, w, yb.baseAddress! + t * rows, ldy: rows, kernel: kernel)
                }
            }
        }
        return (ggml, batch, alone, w, x)
    }

    @Test(arguments: ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
    func bitIdenticalToGgmlVecDot(_ name: String) throws {
        for kernel in [QuantGEMM.Kernel.best, .avx2] {
            let r = try Self.run(name, kernel)
            var bad = 0, worst = 0.0
            for i in 0..<r.ggml.count {
                for y in [r.batch[i], r.alone[i]] where y.bitPattern != r.ggml[i].bitPattern {
                    bad += 1
                    worst = max(worst, abs(Double(y) - Double(r.ggml[i])))
                }
            }
            #expect(bad == 0, "\(name) \(kernel): \(bad) of \(2 * r.ggml.count) outputs differ from ggml (max |diff| \(worst))")
        }
    }

    @Test(arguments: ["Q4_K", "Q5_K", "Q6_K"])
    func kQuantsDifferFromGgmlOnlyBySummationOrder(_ name: String) throws {
        let r = try Self.run(name, .best)
        var row = [Float](repeating: 0, count: Self.cols)
        var worst = 0.0, identical = 0
        for o in 0..<Self.rows {
            row.withUnsafeMutableBufferPointer { r.w.copyRow(o, into: $0.baseAddress!) }
            for t in 0..<Self.tokens {
                var mag = 0.0
                for k in 0..<Self.cols { mag += abs(Double(row[k]) * Double(r.x[t * Self.cols + k])) }
                let tol = 2 * Double(Self.cols / 32 + 12) * 0x1p-23 * 2 * mag
                let i = t * Self.rows + o
                worst = max(worst, abs(Double(r.batch[i]) - Double(r.ggml[i])) / tol)
                #expect(r.batch[i].bitPattern == r.alone[i].bitPattern)
                if r.batch[i].bitPattern == r.ggml[i].bitPattern { identical += 1 }
            }
        }
        print("\(name) vs ggml vec_dot: \(identical)/\(Self.rows * Self.tokens) bit-identical, worst \(worst) of the summation-order bound")
        #expect(worst <= 1, "\(name): \(worst) of the summation-order bound")
    }
}
