import BCKernels
import Foundation
import Testing

/// The float operations of the inference forward against ggml's OWN kernels, bit for bit:
/// fixtures from tools/reference/ggml_ops_fixtures.py (Tests/fixtures/llama/ops/), which ran
/// tiny ggml graphs on llama-cpp-python 0.3.36's libggml-cpu.so (the CPU backend llama.cpp
/// uses, AVX-512 build) — RMSNorm·weight, RoPE (normal pairs), SwiGLU, and one head's decode
/// attention (q·K, softmax with the padding mask, P·V) at lengths 1...130. Issue #15: with
/// these equal (and the quantized dot products, QuantGgmlBitTests), a greedy continuation
/// can only part from llama.cpp's where llama.cpp itself computes a row differently (its
/// prompt P·V goes through llamafile's sgemm, a third summation order).
///
/// Every check counts values whose bits differ and expects none (a scalar count: a failing
/// array comparison can take minutes to print).
@Suite struct GgmlOpsBitTests {
    static func load(_ name: String) throws -> [Float] {
        let data = try Data(contentsOf: URL(fileURLWithPath: Repo.path("Tests/fixtures/llama/ops/\(name).f32")))
        return data.withUnsafeBytes { raw in (0..<data.count / 4).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) } }
    }

    static func mismatches(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Int {
        var m = 0
        for i in 0..<n where a[i].bitPattern != b[i].bitPattern { m += 1 }
        return m
    }

    /// y = ggml_mul(ggml_rms_norm(x, 1e-5), w): 8 rows of 576, row scales 0.05...20.
    @Test func rmsNormIsGgmls() throws {
        let f = try Self.load("rms"), d = 576, rows = 8
        try #require(f.count == d + 2 * rows * d)
        var y = [Float](repeating: 0, count: rows * d)
        var bad = 0
        f.withUnsafeBufferPointer { fb in
            let w = fb.baseAddress!, x = w + d, ref = x + rows * d
            y.withUnsafeMutableBufferPointer { yb in
                for r in 0..<rows { VectorMath.rmsNorm(x + r * d, w, yb.baseAddress! + r * d, d, eps: 1e-5) }
                bad = Self.mismatches(yb.baseAddress!, ref, rows * d)
            }
        }
        #expect(bad == 0, "\(bad) of \(rows * d) values differ from ggml's")
    }

    /// ggml_rope_ext (mode 0, 64 dims, base 100000) of 3 heads at positions 0...8191.
    @Test func ropeIsGgmls() throws {
        let f = try Self.load("rope"), positions = [0, 1, 2, 3, 17, 100, 511, 1000, 4095, 8191], hd = 64, heads = 3
        try #require(f.count == 2 * positions.count * heads * hd)
        let rope = RotaryEmbedding(headDim: hd, base: 100000)
        var x = Array(f[0..<(positions.count * heads * hd)])
        var table = [Float](repeating: 0, count: hd)
        var bad = 0
        x.withUnsafeMutableBufferPointer { xb in
            for (i, p) in positions.enumerated() {
                table.withUnsafeMutableBufferPointer { rope.table(position: p, into: $0.baseAddress!) }
                rope.apply(xb.baseAddress! + i * heads * hd, heads: heads, table: table)
            }
            f.withUnsafeBufferPointer { bad = Self.mismatches(xb.baseAddress!, $0.baseAddress! + xb.count, xb.count) }
        }
        #expect(bad == 0, "\(bad) of \(x.count) values differ from ggml's")
    }

    /// ggml_swiglu_split(gate, up): 4 rows of 1536, gates in ±12 plus the exp's edges
    /// (−120 ... 100: underflow to subnormal and zero, overflow to +inf).
    @Test func swigluIsGgmls() throws {
        let f = try Self.load("swiglu"), n = 1536, rows = 4
        try #require(f.count == 3 * rows * n)
        var out = [Float](repeating: 0, count: rows * n)
        var bad = 0
        f.withUnsafeBufferPointer { fb in
            let gate = fb.baseAddress!, up = gate + rows * n, ref = up + rows * n
            out.withUnsafeMutableBufferPointer { ob in
                for r in 0..<rows { VectorMath.swiglu(gate + r * n, up + r * n, ob.baseAddress! + r * n, n) }
                bad = Self.mismatches(ob.baseAddress!, ref, rows * n)
            }
        }
        #expect(bad == 0, "\(bad) of \(rows * n) values differ from ggml's")
    }

    /// One head's decode attention (`Attention.group`, and `Attention.rows` for the same
    /// row) vs ggml's mul_mat(k, q) → soft_max_ext(mask, 1/8) → mul_mat(vᵀ, p) over a
    /// 256-cell cache, at lengths 1...130: the probabilities and the output, bit for bit.
    @Test func decodeAttentionIsGgmls() throws {
        let f = try Self.load("attn"), probs = try Self.load("softmax")
        let lengths = [1, 2, 3, 4, 5, 16, 17, 63, 64, 65, 100, 130], hd = 64, nkv = 256
        try #require(f.count == lengths.reduce(0) { $0 + hd * (2 + 2 * $1) } && probs.count == lengths.count * nkv)
        var offset = 0, badOut = 0, badP = 0, badRows = 0
        for (c, n) in lengths.enumerated() {
            f.withUnsafeBufferPointer { fb in
                let q = fb.baseAddress! + offset, k = q + hd, v = k + n * hd, ref = v + n * hd
                let view = KVView(segments: [KVSegment(keys: k, values: v,
                                                       start: 0, count: n)], rowStride: hd)
                var scores = [Float](repeating: 0, count: n), out = [Float](repeating: 0, count: hd)
                var tiledScores = [Float](repeating: 0, count: n), tiled = [Float](repeating: 0, count: hd)
                scores.withUnsafeMutableBufferPointer { sb in
                    out.withUnsafeMutableBufferPointer { ob in
                        Attention.group(q: q, heads: 1, kv: view, offset: 0, headDim: hd, lo: 0, visible: n, scale: 0.125,
                                        scores: sb.baseAddress!, out: ob.baseAddress!)
                        badOut += Self.mismatches(ob.baseAddress!, ref, hd)
                        probs.withUnsafeBufferPointer { badP += Self.mismatches(sb.baseAddress!, $0.baseAddress! + c * nkv, n) }
                    }
                }
                tiled.withUnsafeMutableBufferPointer { tb in
                    let query = [AttentionQuery(q: q, out: tb.baseAddress!, lo: 0, visible: n)]
                    query.withUnsafeBufferPointer { qs in
                        tiledScores.withUnsafeMutableBufferPointer {
                            Attention.rows(qs, heads: 1, kv: view, offset: 0, headDim: hd, scale: 0.125, scores: $0.baseAddress!)
                        }
                    }
                    badRows += Self.mismatches(tb.baseAddress!, ref, hd)
                }
            }
            offset += hd * (2 + 2 * n)
        }
        #expect(badP == 0, "\(badP) probabilities differ from ggml's")
        #expect(badOut == 0, "\(badOut) outputs of Attention.group differ from ggml's")
        #expect(badRows == 0, "\(badRows) outputs of Attention.rows differ from ggml's")
    }
}
