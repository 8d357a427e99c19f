import BCCore
import BCFormats
import BCKernels
import CSupport
import Testing

/// The quantized-weight kernels (`QuantizedWeights`, `QuantGEMM`, CSupport/quant_dot.h)
/// against float64 references on fresh random blocks: odd row counts, 1 to 18 blocks
/// per row, token counts across the 64-token work blocks.
///
/// Tolerances:
/// - activation quantization is compared exactly with a scalar reference of llama.cpp's
///   x86 quantize_row_q8_0/q8_1 (q = round-half-even(x·id), id = 127/amax in float32;
///   d = f16(amax/127), s = f16((amax/127)·Σq), rounded here by Swift's Float16, not by
///   the kernel's F16C instruction), and of its quantize_row_q8_K for the k-quants;
/// - a product, against the float64 value of the same integer arithmetic
///   Σ_b (d_w·d_a)_b·Σ q_w·q_a (+ m_b·s_b for Q4_1) with those f16 scales: (nb + 12)·2⁻²³ ·
///   Σ_b (|d_w·d_a|·Σ|q_w·q_a| + |m_b·s_b|), the float32 rounding of each block's scale
///   product, of the nb-step accumulation in 8 lanes and of the final lane sum (keeping
///   d and s in float32, as before, is ~2⁻¹² relative off per block: far outside);
/// - a product, against the exact float64 product with the unquantized activations:
///   the activation error actually made, Σ_k |W_k|·|x_k − d_a·q_k| (+ |m_b|·|s_b − d_a·Σq|
///   for Q4_1), plus the tolerance above.
@Suite struct QuantKernelTests {
    /// The 32-value formats of quant_dot.h (the others: KQuantKernelTests).
    static let legacy: [QuantFormat] = [.q4_0, .q4_1, .q8_0]

    /// Random blocks for `rows` × `cols` of `format` (fresh data every call: scales of
    /// both signs, all nibble/int8 values, Q8_0's −128 included).
    static func randomBlocks(_ format: QuantFormat, rows: Int, cols: Int, _ g: inout SplitMix64) -> [UInt8] {
        var bytes: [UInt8] = []
        func half(_ v: Float) { let b = Float16(v).bitPattern; bytes += [UInt8(b & 0xFF), UInt8(b >> 8)] }
        for _ in 0..<(rows * cols / 32) {
            half(g.uniform() * 0.05 + (g.uniform() < 0 ? -0.01 : 0.01))
            switch format {
            case .q8_0: for _ in 0..<32 { bytes.append(UInt8(truncatingIfNeeded: g.next() >> 56)) }
            case .q4_0: for _ in 0..<16 { bytes.append(UInt8(truncatingIfNeeded: g.next() >> 56)) }
            default:  // .q4_1
                half(g.uniform() * 0.2)
                for _ in 0..<16 { bytes.append(UInt8(truncatingIfNeeded: g.next() >> 56)) }
            }
        }
        return bytes
    }

    /// Activations with a different magnitude per block, never zero.
    static func randomActivations(_ n: Int, _ g: inout SplitMix64) -> [Float] {
        var x = [Float](repeating: 0, count: n)
        for b in 0..<(n / 32) {
            let scale = 0.1 + 4 * abs(g.uniform())
            for j in 0..<32 {
                var v = g.uniform() * scale
                if v == 0 { v = 1e-3 }
                x[32 * b + j] = v
            }
        }
        return x
    }

    /// The scalar reference of `bc_quant_q8a_row` for one block (llama.cpp's x86
    /// quantize_row_q8_1: codes and s from the float32 d = amax/127, d and s stored as f16).
    static func referenceBlock(_ x: ArraySlice<Float>) -> (d: Float, s: Float, q: [Int8]) {
        let amax = x.reduce(Float(0)) { max($0, abs($1)) }
        let d32 = amax / 127, id: Float = amax != 0 ? 127 / amax : 0
        let q = x.map { Int8(($0 * id).rounded(.toNearestOrEven)) }
        let s32 = d32 * Float(q.reduce(0) { $0 + Int($1) })
        return (Float(Float16(d32)), Float(Float16(s32)), q)
    }

    /// The scalar reference of `bc_quant_q8k_row` for 256 values (llama.cpp's
    /// quantize_row_q8_K: one scale, d = 1/(127/amax) in float32, not rounded), as the 8
    /// blocks of 32 it writes (each s = d·Σ of its q, float32).
    static func referenceBlocksQ8K(_ x: ArraySlice<Float>) -> [(d: Float, s: Float, q: [Int8])] {
        let amax = x.reduce(Float(0)) { max($0, abs($1)) }
        let id: Float = amax != 0 ? 127 / amax : 0, d: Float = amax != 0 ? 1 / id : 0
        return (0..<8).map { sb in
            let q = x[(x.startIndex + 32 * sb)..<(x.startIndex + 32 * sb + 32)].map { Int8(($0 * id).rounded(.toNearestOrEven)) }
            return (d, d * Float(q.reduce(0) { $0 + Int($1) }), q)
        }
    }

    /// The reference activation blocks of token row x (cols values) for `format`.
    static func referenceActivations(_ format: QuantFormat, _ x: ArraySlice<Float>) -> [(d: Float, s: Float, q: [Int8])] {
        let o = x.startIndex
        if format.usesQ8K { return (0..<(x.count / 256)).flatMap { referenceBlocksQ8K(x[(o + 256 * $0)..<(o + 256 * $0 + 256)]) } }
        return (0..<(x.count / 32)).map { referenceBlock(x[(o + 32 * $0)..<(o + 32 * $0 + 32)]) }
    }

    static func dequantized(_ format: QuantFormat, _ bytes: [UInt8], count: Int) throws -> [Float] {
        var out = [Float](repeating: 0, count: count)
        try bytes.withUnsafeBytes { raw in
            try out.withUnsafeMutableBufferPointer {
                try dequantize(type: GGMLType(rawValue: format.rawValue)!, data: raw, count: count, into: $0.baseAddress!)
            }
        }
        return out
    }

    static func product(_ w: QuantizedWeights, _ x: [Float], tokens: Int) -> [Float] {
        var y = [Float](repeating: .nan, count: tokens * w.rows)
        x.withUnsafeBufferPointer { xb in
            y.withUnsafeMutableBufferPointer { QuantGEMM.multiply(xb.baseAddress!, ldx: w.cols, tokens: tokens, w, $0.baseAddress!, ldy: w.rows) }
        }
        return y
    }

    @Test func activationQuantizationMatchesScalarReference() {
        var g = SplitMix64(state: 0xA11CE)
        for nb in [1, 3, 18] {
            var x = Self.randomActivations(32 * nb + 32, &g)
            // One exact-half case per block kind: x·127/amax lands on k + 0.5.
            x[5] = 2.5 / 127 * 4; x[0] = 4; x[1] = -4
            if nb >= 3 {
                // f16 edge cases of the scale: block 1's d = amax/127 is an f16 subnormal
                // (coarse rounding), block 2's is below half the smallest one (d rounds to 0:
                // the block's d·Σq_w·q_a term vanishes, as in llama.cpp, while its codes are
                // ±127 as usual and s, made from the float32 d, does not).
                for j in 32..<64 { x[j] *= 2e-4 }
                for j in 64..<96 { x[j] *= 1e-7 }
            }
            for j in 0..<32 { x[32 * nb + j] = 0 }  // the edge case amax = 0
            var blocks = [bc_q8a_block](repeating: bc_q8a_block(), count: nb + 1)
            x.withUnsafeBufferPointer { bc_quant_q8a_row($0.baseAddress!, &blocks, Int64(nb + 1)) }
            var f32Differs = 0
            for b in 0...nb {
                let ref = Self.referenceBlock(x[(32 * b)..<(32 * b + 32)])
                let q = withUnsafeBytes(of: blocks[b].q) { Array($0.bindMemory(to: Int8.self)) }
                #expect(blocks[b].d.bitPattern == ref.d.bitPattern && blocks[b].s.bitPattern == ref.s.bitPattern && q == ref.q,
                        "block \(b) of \(nb + 1)")
                let amax = x[(32 * b)..<(32 * b + 32)].reduce(Float(0)) { max($0, abs($1)) }
                if ref.d != amax / 127 { f32Differs += 1 }
            }
            #expect(blocks[nb].d == 0 && blocks[nb].s == 0)
            // The reference really rounds: a float32 scale (the old kernel) would fail here.
            #expect(f32Differs >= nb, "only \(f32Differs) of \(nb) scales change when rounded to f16")
            if nb >= 3 {
                #expect(blocks[1].d > 0 && Float16(blocks[1].d).isSubnormal, "block 1: d \(blocks[1].d)")
                #expect(blocks[2].d == 0 && blocks[2].s != 0 && Self.q127(blocks[2]), "block 2: d \(blocks[2].d), s \(blocks[2].s)")
            }
        }
    }

    static func q127(_ b: bc_q8a_block) -> Bool {
        withUnsafeBytes(of: b.q) { $0.bindMemory(to: Int8.self).contains { abs(Int($0)) == 127 } }
    }

    /// `bc_quant_q8k_row` (k-quant activations) against the scalar q8_K reference, exactly:
    /// one float32 scale per 256 values shared by its 8 blocks, an exact-half case, a
    /// 256-value run of zeros.
    @Test func q8KActivationQuantizationMatchesScalarReference() {
        var g = SplitMix64(state: 0xA11CE8)
        for nb in [1, 3] {
            var x = Self.randomActivations(256 * nb + 256, &g)
            x[37] = 2.5 / 127 * 9; x[200] = -9
            for j in 0..<256 { x[256 * nb + j] = 0 }
            var blocks = [bc_q8a_block](repeating: bc_q8a_block(), count: 8 * (nb + 1))
            x.withUnsafeBufferPointer { bc_quant_q8k_row($0.baseAddress!, &blocks, Int64(nb + 1)) }
            for i in 0...nb {
                let ref = Self.referenceBlocksQ8K(x[(256 * i)..<(256 * i + 256)])
                for sb in 0..<8 {
                    let b = blocks[8 * i + sb]
                    let q = withUnsafeBytes(of: b.q) { Array($0.bindMemory(to: Int8.self)) }
                    #expect(b.d.bitPattern == ref[sb].d.bitPattern && b.s.bitPattern == ref[sb].s.bitPattern && q == ref[sb].q,
                            "256-block \(i), sub-block \(sb)")
                }
            }
            #expect(blocks[8 * nb].d == 0 && blocks[8 * nb + 7].s == 0)
            #expect(blocks[0].d == blocks[7].d && blocks[0].d == 1 / (127 / Float(9)), "one scale per 256: d = 1/(127/amax)")
        }
    }

    @Test(arguments: QuantKernelTests.legacy)
    func copyRowMatchesFormatsDequantize(_ format: QuantFormat) throws {
        var g = SplitMix64(state: 0xD0 &+ UInt64(format.rawValue))
        let rows = 13, cols = 32 * 7
        let bytes = Self.randomBlocks(format, rows: rows, cols: cols, &g)
        let w = try bytes.withUnsafeBytes { try QuantizedWeights(format: format, rows: rows, cols: cols, bytes: $0) }
        let ref = try Self.dequantized(format, bytes, count: rows * cols)
        var row = [Float](repeating: .nan, count: cols)
        for r in 0..<rows {
            row.withUnsafeMutableBufferPointer { w.copyRow(r, into: $0.baseAddress!) }
            #expect(row == Array(ref[(r * cols)..<(r * cols + cols)]), "row \(r)")
        }
        #expect(w.byteCount == rows * cols / 32 * format.blockBytes)
    }

    @Test(arguments: QuantKernelTests.legacy)
    func productMatchesFloat64(_ format: QuantFormat) throws {
        var g = SplitMix64(state: 0x9A17 &+ UInt64(format.rawValue))
        for (rows, nb, tokens) in [(37, 1, 1), (45, 7, 5), (33, 18, 67), (1, 3, 2)] {
            let cols = 32 * nb
            let bytes = Self.randomBlocks(format, rows: rows, cols: cols, &g)
            let w = try bytes.withUnsafeBytes { try QuantizedWeights(format: format, rows: rows, cols: cols, bytes: $0) }
            let wf = try Self.dequantized(format, bytes, count: rows * cols)
            var x = Self.randomActivations(tokens * cols, &g)
            // Block 1 of every token tiny: its f16 scale rounds to 0, as in llama.cpp.
            if nb >= 7 { for t in 0..<tokens { for j in 0..<32 { x[t * cols + 32 + j] *= 1e-7 } } }
            let y = Self.product(w, x, tokens: tokens)
            var worstInt = 0.0, worstTrue = 0.0
            for t in 0..<tokens {
                let acts = Self.referenceActivations(format, x[(t * cols)..<(t * cols + cols)])
                for o in 0..<rows {
                    var ref = 0.0, mag = 0.0, exact = 0.0, roundBound = 0.0
                    for b in 0..<nb {
                        let blk = bytes[((o * nb + b) * format.blockBytes)...]
                        let dw = Double(Float(Float16(bitPattern: UInt16(blk[blk.startIndex]) | UInt16(blk[blk.startIndex + 1]) << 8)))
                        var isum = 0.0, isumAbs = 0.0, qsum = 0.0
                        for j in 0..<32 {
                            let k = 32 * b + j, wv = Double(wf[o * cols + k])
                            let xq = Double(acts[b].d) * Double(acts[b].q[j])
                            // The integer weight value: (w - m)/d for Q4_1, w/d otherwise.
                            let qw: Double
                            switch format {
                            case .q8_0: qw = Double(Int8(bitPattern: blk[blk.startIndex + 2 + j]))
                            case .q4_0: let v = blk[blk.startIndex + 2 + j % 16]; qw = Double(Int(j < 16 ? v & 15 : v >> 4) - 8)
                            default: let v = blk[blk.startIndex + 4 + j % 16]; qw = Double(j < 16 ? v & 15 : v >> 4)
                            }
                            isum += qw * Double(acts[b].q[j])
                            isumAbs += abs(qw * Double(acts[b].q[j]))
                            qsum += Double(acts[b].q[j])
                            exact += wv * Double(x[t * cols + k])
                            roundBound += abs(wv) * abs(Double(x[t * cols + k]) - xq)
                        }
                        let term = dw * Double(acts[b].d) * isum
                        ref += term
                        mag += abs(dw * Double(acts[b].d)) * isumAbs
                        if format == .q4_1 {
                            let m = Double(Float(Float16(bitPattern: UInt16(blk[blk.startIndex + 2]) | UInt16(blk[blk.startIndex + 3]) << 8)))
                            ref += m * Double(acts[b].s)
                            mag += abs(m * Double(acts[b].s))
                            roundBound += abs(m) * abs(Double(acts[b].s) - Double(acts[b].d) * qsum)
                        }
                    }
                    let tol = Double(nb + 12) * 0x1p-23 * mag + 1e-30
                    let got = Double(y[t * rows + o])
                    worstInt = max(worstInt, abs(got - ref) / tol)
                    worstTrue = max(worstTrue, abs(got - exact) / (roundBound + tol))
                }
            }
            #expect(worstInt <= 1, "\(format.name) \(rows)×\(cols), \(tokens) tokens: integer-path error \(worstInt) of tolerance")
            #expect(worstTrue <= 1, "\(format.name) \(rows)×\(cols), \(tokens) tokens: error vs float \(worstTrue) of the rounding bound")
        }
    }

    /// A token's outputs are the same bits alone, in any batch, at any thread count.
    @Test(arguments: QuantKernelTests.legacy)
    func batchAndThreadInvariant(_ format: QuantFormat) throws {
        var g = SplitMix64(state: 0x1B17 &+ UInt64(format.rawValue))
        let rows = 77, cols = 32 * 9, tokens = 70
        let bytes = Self.randomBlocks(format, rows: rows, cols: cols, &g)
        let w = try bytes.withUnsafeBytes { try QuantizedWeights(format: format, rows: rows, cols: cols, bytes: $0) }
        let x = Self.randomActivations(tokens * cols, &g)
        defer { try? Parallel.setThreadCount(0) }
        try Parallel.setThreadCount(1)
        let one = Self.product(w, x, tokens: tokens)
        for threads in [2, 3] {
            try Parallel.setThreadCount(threads)
            let all = Self.product(w, x, tokens: tokens)
            #expect(all.map(\.bitPattern) == one.map(\.bitPattern), "\(threads) threads")
            for t in [0, 33, 69] {
                let alone = Self.product(w, Array(x[(t * cols)..<(t * cols + cols)]), tokens: 1)
                #expect(alone.map(\.bitPattern) == one[(t * rows)..<(t * rows + rows)].map(\.bitPattern), "token \(t) alone")
            }
        }
    }

    /// Every kernel `multiply` may use (AVX2 four-token groups, AVX-512 VNNI 4×4 tiles,
    /// their row and token tails) gives the bits of the one-token AVX2 kernel
    /// (`bc_quant_dot_*`) for each output, with 1 to 3 threads, row counts that are odd
    /// and not multiples of 4 or 32, and 1…70 tokens (tails of 4-token groups and of the
    /// 64-token work blocks); `.best` and `.avx2` agree.
    @Test(arguments: QuantKernelTests.legacy)
    func kernelsMatchOneTokenKernelBitForBit(_ format: QuantFormat) throws {
        var g = SplitMix64(state: 0x71E5 &+ UInt64(format.rawValue))
        defer { try? Parallel.setThreadCount(0) }
        for (rows, nb) in [(37, 5), (4, 1), (70, 18)] {
            let cols = 32 * nb
            let bytes = Self.randomBlocks(format, rows: rows, cols: cols, &g)
            let w = try bytes.withUnsafeBytes { try QuantizedWeights(format: format, rows: rows, cols: cols, bytes: $0) }
            let maxTokens = 70
            let x = Self.randomActivations(maxTokens * cols, &g)
            var acts = [bc_q8a_block](repeating: bc_q8a_block(), count: maxTokens * nb)
            x.withUnsafeBufferPointer { xb in
                for t in 0..<maxTokens { bc_quant_q8a_row(xb.baseAddress! + t * cols, &acts[t * nb], Int64(nb)) }
            }
            // The reference: each output alone by the one-token kernel.
            var ref = [Float](repeating: 0, count: maxTokens * rows)
            bytes.withUnsafeBytes { raw in
                let base = raw.bindMemory(to: UInt8.self).baseAddress!
                acts.withUnsafeBufferPointer { ab in
                    for t in 0..<maxTokens {
                        for o in 0..<rows {
                            let row = base + o * w.segments[0].rowBytes, act = ab.baseAddress! + t * nb
                            switch format {
                            case .q8_0: ref[t * rows + o] = bc_quant_dot_q8_0(row, act, Int64(nb))
                            case .q4_0: ref[t * rows + o] = bc_quant_dot_q4_0(row, act, Int64(nb))
                            default: ref[t * rows + o] = bc_quant_dot_q4_1(row, act, Int64(nb))
                            }
                        }
                    }
                }
            }
            for tokens in [1, 3, 4, 5, 8, 12, 13, 64, 67, 70] {
                let want = ref[0..<(tokens * rows)].map(\.bitPattern)
                for threads in [1, 2, 3] {
                    try Parallel.setThreadCount(threads)
                    for kernel in [QuantGEMM.Kernel.best, .avx2] {
                        var y = [Float](repeating: .nan, count: tokens * rows)
                        x.withUnsafeBufferPointer { xb in
                            y.withUnsafeMutableBufferPointer {
                                QuantGEMM.multiply(xb.baseAddress!, ldx: cols, tokens: tokens, w, $0.baseAddress!, ldy: rows,
                                                   kernel: kernel)
                            }
                        }
                        #expect(y.map(\.bitPattern) == want,
                                "\(format.name) \(rows)×\(cols), \(tokens) tokens, \(threads) threads, \(kernel)")
                    }
                }
            }
        }
    }

    /// The AVX-512 tiles themselves (4 rows × 8 and × 4 tokens) against the one-token
    /// kernel on strided activations and outputs (skipped on a CPU without AVX-512 VNNI,
    /// where `multiply` never calls them).
    @Test(arguments: QuantKernelTests.legacy, [4, 8])
    func avx512TileMatchesOneTokenKernel(_ format: QuantFormat, _ tokens: Int) throws {
        guard QuantGEMM.hasAVX512 else { return }
        var g = SplitMix64(state: 0x512 &+ UInt64(format.rawValue) &+ UInt64(tokens))
        for nb in [1, 2, 7, 18] {
            let cols = 32 * nb, rows = 4
            let bytes = Self.randomBlocks(format, rows: rows, cols: cols, &g)
            let w = try bytes.withUnsafeBytes { try QuantizedWeights(format: format, rows: rows, cols: cols, bytes: $0) }
            let x = Self.randomActivations(tokens * cols, &g)
            let lda = nb + 3  // activation stride > one row
            var acts = [bc_q8a_block](repeating: bc_q8a_block(), count: tokens * lda)
            x.withUnsafeBufferPointer { xb in
                for t in 0..<tokens { bc_quant_q8a_row(xb.baseAddress! + t * cols, &acts[t * lda], Int64(nb)) }
            }
            let ldo = 7
            var out = [Float](repeating: .nan, count: tokens * ldo)
            bytes.withUnsafeBytes { raw in
                let base = raw.bindMemory(to: UInt8.self).baseAddress!
                acts.withUnsafeBufferPointer { ab in
                    let a = ab.baseAddress!
                    let stride = Int64(w.segments[0].rowBytes), la = Int64(lda), n = Int64(nb), lo = Int64(ldo)
                    switch (format, tokens) {
                    case (.q8_0, 8): bc_quant_tile4x8_q8_0_avx512(base, stride, a, la, n, &out, lo)
                    case (.q4_0, 8): bc_quant_tile4x8_q4_0_avx512(base, stride, a, la, n, &out, lo)
                    case (_, 8): bc_quant_tile4x8_q4_1_avx512(base, stride, a, la, n, &out, lo)
                    case (.q8_0, _): bc_quant_tile4x4_q8_0_avx512(base, stride, a, la, n, &out, lo)
                    case (.q4_0, _): bc_quant_tile4x4_q4_0_avx512(base, stride, a, la, n, &out, lo)
                    default: bc_quant_tile4x4_q4_1_avx512(base, stride, a, la, n, &out, lo)
                    }
                    for t in 0..<tokens {
                        for r in 0..<4 {
                            let row = base + r * w.segments[0].rowBytes, act = a + t * lda
                            let want: Float
                            switch format {
                            case .q8_0: want = bc_quant_dot_q8_0(row, act, Int64(nb))
                            case .q4_0: want = bc_quant_dot_q4_0(row, act, Int64(nb))
                            default: want = bc_quant_dot_q4_1(row, act, Int64(nb))
                            }
                            #expect(out[t * ldo + r].bitPattern == want.bitPattern, "\(format.name) nb \(nb) token \(t) row \(r)")
                        }
                    }
                }
            }
            #expect(out.enumerated().allSatisfy { $0.offset % ldo < 4 || $0.element.isNaN }, "writes only its 4 output columns")
        }
    }

    @Test(arguments: QuantKernelTests.legacy)
    func inputGradientMatchesFloat64(_ format: QuantFormat) throws {
        var g = SplitMix64(state: 0x6AD &+ UInt64(format.rawValue))
        let rows = 29, cols = 32 * 5, tokens = 37
        let bytes = Self.randomBlocks(format, rows: rows, cols: cols, &g)
        let w = try bytes.withUnsafeBytes { try QuantizedWeights(format: format, rows: rows, cols: cols, bytes: $0) }
        let wf = try Self.dequantized(format, bytes, count: rows * cols)
        let dY = (0..<(tokens * rows)).map { _ in g.uniform() }
        let start = (0..<(tokens * cols)).map { _ in g.uniform() }
        for accumulate in [false, true] {
            var dX = start
            dY.withUnsafeBufferPointer { d in
                dX.withUnsafeMutableBufferPointer {
                    QuantGEMM.inputGradient(d.baseAddress!, ldDY: rows, tokens: tokens, w, $0.baseAddress!, ldDX: cols,
                                            accumulate: accumulate)
                }
            }
            var worst = 0.0
            for t in 0..<tokens {
                for k in 0..<cols {
                    var ref = accumulate ? Double(start[t * cols + k]) : 0, mag = abs(ref)
                    for o in 0..<rows {
                        let p = Double(dY[t * rows + o]) * Double(wf[o * cols + k])
                        ref += p
                        mag += abs(p)
                    }
                    worst = max(worst, abs(Double(dX[t * cols + k]) - ref) / (Double(rows + 2) * 0x1p-24 * mag + 1e-30))
                }
            }
            #expect(worst <= 1, "\(format.name) accumulate \(accumulate): \(worst) of the float32 summation bound")
        }
    }

    @Test func rejectsBadShapes() {
        #expect(throws: BatchCoreError.self) { try QuantizedWeights(format: .q4_1, rows: 2, cols: 48) { _ in } }
        #expect(throws: BatchCoreError.self) {
            try [UInt8](repeating: 1, count: 39).withUnsafeBytes { try QuantizedWeights(format: .q4_1, rows: 2, cols: 32, bytes: $0) }
        }
    }
}
