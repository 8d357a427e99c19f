import BCCore
import BCFormats
import BCKernels
import CSupport
import Foundation
import Testing

/// Q5_0, Q5_1, Q4_K, Q5_K and Q6_K: dequantization against gguf-py (Tests/fixtures/kquant,
/// tools/reference/kquant_fixtures.py) and the resident kernels (`QuantGEMM` over
/// CSupport/quant_kdot.h) against float64 on fresh random blocks.
///
/// The float64 reference decodes each weight from its block fields as w = a − b exactly
/// (a = d·sc·(u − c), b = dmin·mn or −m), written here from ggml's layouts, and is itself
/// checked against gguf-py's values. Tolerances:
/// - dequantization: bit-exact with gguf-py (the same float32 operations: (d·sc)·q − dmin·mn);
/// - a product against float64 of the same integer arithmetic Σ a·d_a·q_a − b·s_a (b is
///   constant over each 32-value sub-block; activations as llama.cpp quantizes them for
///   the format: q8_0/q8_1 with f16 d and s for Q5_0/Q5_1, q8_K with one float32 d per
///   256 for the k-quants, `QuantKernelTests.referenceActivations`):
///   (nSub + 12)·2⁻²³·Σ(|a|·|d_a·q_a| + |b|·|s_a|) (nSub = 32-value sub-blocks per row): the
///   float32 rounding of each sub-block's scale product and min term, of the accumulation
///   in 8 lanes and of the final sums; the integer lanes themselves are exact;
/// - a product against the exact product with the unquantized activations: that plus
///   the activation error made, Σ_k |w_k|·|x_k − d_a·q_k| + Σ_b |b|·|s_a − d_a·Σq|.
@Suite struct KQuantKernelTests {
    static let formats: [QuantFormat] = [.q5_0, .q5_1, .q4_K, .q5_K, .q6_K]

    /// `blocks` random blocks of `f`: random bytes (every quant value, scale and min bit
    /// pattern) with finite half scales of both signs set so that |w| is about 0.1–1.
    /// `scale` multiplies every half scale.
    static func randomBlocks(_ f: QuantFormat, blocks: Int, _ g: inout SplitMix64, scale: Float = 1) -> [UInt8] {
        var bytes = (0..<(blocks * f.blockBytes)).map { _ in UInt8(truncatingIfNeeded: g.next() >> 56) }
        func setHalf(_ i: Int, _ v: Float) {
            let b = Float16(v * scale).bitPattern
            bytes[i] = UInt8(b & 0xFF)
            bytes[i + 1] = UInt8(b >> 8)
        }
        for i in 0..<blocks {
            let o = i * f.blockBytes, sign: Float = g.uniform() < 0 ? -1 : 1
            switch f {
            case .q5_0: setHalf(o, sign * (0.01 + 0.05 * abs(g.uniform())))
            case .q5_1:
                setHalf(o, sign * (0.01 + 0.05 * abs(g.uniform())))
                setHalf(o + 2, 0.3 * g.uniform())
            case .q4_K, .q5_K:
                setHalf(o, sign * (0.0003 + 0.002 * abs(g.uniform())))
                setHalf(o + 2, 0.0003 + 0.002 * abs(g.uniform()))
            case .q6_K: setHalf(o + 208, sign * (0.0002 + 0.001 * abs(g.uniform())))
            default: break
            }
        }
        return bytes
    }

    static func half(_ b: ArraySlice<UInt8>, _ o: Int) -> Double {
        Double(Float(Float16(bitPattern: UInt16(b[b.startIndex + o]) | UInt16(b[b.startIndex + o + 1]) << 8)))
    }

    /// Each value of one block as (a, b), w = a − b exactly in float64.
    static func decode64(_ f: QuantFormat, _ blk: ArraySlice<UInt8>) -> [(a: Double, b: Double)] {
        let s = blk.startIndex
        func byte(_ i: Int) -> Int { Int(blk[s + i]) }
        switch f {
        case .q5_0, .q5_1:
            let hasMin = f == .q5_1, qh0 = hasMin ? 4 : 2, qs0 = qh0 + 4
            let d = half(blk, 0), m = hasMin ? half(blk, 2) : 0
            let qh = (0..<4).reduce(0) { $0 | byte(qh0 + $1) << (8 * $1) }
            return (0..<32).map { j in
                let nib = j < 16 ? byte(qs0 + j) & 15 : byte(qs0 + j - 16) >> 4
                let u = nib | ((qh >> j) & 1) << 4
                return hasMin ? (d * Double(u), -m) : (d * Double(u - 16), 0)
            }
        case .q4_K, .q5_K:
            let d = half(blk, 0), dmin = half(blk, 2), five = f == .q5_K, qs0 = five ? 48 : 16
            var out: [(a: Double, b: Double)] = []
            for sub in 0..<8 {
                // 6-bit scale and min of sub-block `sub` from the 12 bytes at 4
                let sc: Int, mn: Int
                if sub < 4 { sc = byte(4 + sub) & 63; mn = byte(8 + sub) & 63 } else {
                    sc = (byte(8 + sub) & 15) | (byte(sub) >> 6) << 4
                    mn = (byte(8 + sub) >> 4) | (byte(4 + sub) >> 6) << 4
                }
                for l in 0..<32 {
                    var u = (byte(qs0 + 32 * (sub / 2) + l) >> (4 * (sub % 2))) & 15
                    if five { u |= ((byte(16 + l) >> sub) & 1) << 4 }
                    out.append((d * Double(sc) * Double(u), dmin * Double(mn)))
                }
            }
            return out
        default:  // .q6_K
            let d = half(blk, 208)
            return (0..<256).map { e in
                let h = e / 128, j = (e % 128) / 32, l = e % 32
                let low = (byte(64 * h + 32 * (j % 2) + l) >> (4 * (j / 2))) & 15
                let high = (byte(128 + 32 * h + l) >> (2 * j)) & 3
                let sc = Double(Int8(bitPattern: blk[s + 192 + e / 16]))
                return (d * sc * Double((low | high << 4) - 32), 0)
            }
        }
    }

    static func fixture(_ name: String) throws -> (raw: [UInt8], values: [Float]) {
        let dir = Repo.path("Tests/fixtures/kquant")
        let raw = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(name).bin")))
        let f = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(name).f32"))
        let values = f.withUnsafeBytes { b in (0..<(f.count / 4)).map { Float(bitPattern: UInt32(littleEndian: b.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) } }
        return (raw, values)
    }

    static func weights(_ f: QuantFormat, rows: Int, cols: Int, _ bytes: [UInt8]) throws -> QuantizedWeights {
        try bytes.withUnsafeBytes { try QuantizedWeights(format: f, rows: rows, cols: cols, bytes: $0) }
    }

    /// Formats' `dequantize`, `QuantizedWeights.copyRow` and the float64 decoder against
    /// gguf-py on the committed blocks.
    @Test(arguments: formats)
    func dequantizationMatchesGGUFPy(_ f: QuantFormat) throws {
        let (raw, ref) = try Self.fixture(f.name)
        let n = ref.count, type = try #require(GGMLType(rawValue: f.rawValue))
        #expect(raw.count == n / f.blockValues * f.blockBytes)
        var out = [Float](repeating: .nan, count: n)
        try raw.withUnsafeBytes { r in try out.withUnsafeMutableBufferPointer { try dequantize(type: type, data: r, count: n, into: $0.baseAddress!) } }
        var mismatches = 0
        for i in 0..<n where out[i].bitPattern != ref[i].bitPattern { mismatches += 1 }
        #expect(mismatches == 0, "\(f.name): dequantize differs from gguf-py at \(mismatches) of \(n)")
        let cols = 256, rows = n / cols
        let w = try Self.weights(f, rows: rows, cols: cols, raw)
        var row = [Float](repeating: .nan, count: cols), rowMismatches = 0
        for r in 0..<rows {
            row.withUnsafeMutableBufferPointer { w.copyRow(r, into: $0.baseAddress!) }
            for k in 0..<cols where row[k].bitPattern != ref[r * cols + k].bitPattern { rowMismatches += 1 }
        }
        #expect(rowMismatches == 0, "\(f.name): copyRow differs from gguf-py at \(rowMismatches) of \(n)")
        var worst = 0.0
        for b in 0..<(n / f.blockValues) {
            let v = Self.decode64(f, raw[(b * f.blockBytes)..<((b + 1) * f.blockBytes)])
            for (j, ab) in v.enumerated() {
                let err = abs(ab.a - ab.b - Double(ref[b * f.blockValues + j])) / ((abs(ab.a) + abs(ab.b)) * 0x1p-23 + 1e-30)
                worst = max(worst, err)
            }
        }
        #expect(worst <= 1, "\(f.name): float64 decoder vs gguf-py \(worst) of 2^-23")
    }

    /// Products against float64 on random blocks: odd row counts, several k sizes, token
    /// counts across the 4-token groups and the 64-token work blocks.
    @Test(arguments: formats)
    func productMatchesFloat64(_ f: QuantFormat) throws {
        var g = SplitMix64(state: 0x5EED &+ UInt64(f.rawValue))
        let shapes = f.blockValues == 32 ? [(37, 224, 1), (45, 32, 5), (33, 576, 67), (1, 96, 2)]
                                         : [(37, 256, 1), (45, 768, 5), (33, 1536, 67), (1, 512, 2)]
        for (rows, cols, tokens) in shapes {
            let nb = cols / f.blockValues, nSub = cols / 32
            let bytes = Self.randomBlocks(f, blocks: rows * nb, &g)
            let w = try Self.weights(f, rows: rows, cols: cols, bytes)
            let wd = (0..<(rows * nb)).flatMap { Self.decode64(f, bytes[($0 * f.blockBytes)..<(($0 + 1) * f.blockBytes)]) }
            let x = QuantKernelTests.randomActivations(tokens * cols, &g)
            let y = QuantKernelTests.product(w, x, tokens: tokens)
            var worstInt = 0.0, worstTrue = 0.0
            for t in 0..<tokens {
                let acts = QuantKernelTests.referenceActivations(f, x[(t * cols)..<(t * cols + cols)])
                for o in 0..<rows {
                    var ref = 0.0, mag = 0.0, exact = 0.0, roundBound = 0.0
                    for b in 0..<nSub {
                        let bb = wd[o * cols + 32 * b].b, sa = Double(acts[b].s)
                        var qsum = 0.0
                        for j in 0..<32 {
                            let k = 32 * b + j, a = wd[o * cols + k].a, qa = Double(acts[b].d) * Double(acts[b].q[j])
                            ref += a * qa
                            mag += abs(a) * abs(qa)
                            exact += (a - bb) * Double(x[t * cols + k])
                            roundBound += abs(a - bb) * abs(Double(x[t * cols + k]) - qa)
                            qsum += Double(acts[b].q[j])
                        }
                        ref -= bb * sa
                        mag += abs(bb) * abs(sa)
                        roundBound += abs(bb) * abs(sa - Double(acts[b].d) * qsum)
                    }
                    let tol = Double(nSub + 12) * 0x1p-23 * mag + 1e-30
                    let got = Double(y[t * rows + o])
                    worstInt = max(worstInt, abs(got - ref) / tol)
                    worstTrue = max(worstTrue, abs(got - exact) / (roundBound + tol))
                }
            }
            #expect(worstInt <= 1, "\(f.name) \(rows)×\(cols), \(tokens) tokens: integer-path error \(worstInt) of tolerance")
            #expect(worstTrue <= 1, "\(f.name) \(rows)×\(cols), \(tokens) tokens: error vs float \(worstTrue) of the rounding bound")
        }
    }

    /// Every output of `multiply` (VNNI or AVX2, four-token groups and tails, 1–3 threads,
    /// any batch) is the bits of the one-token AVX2 kernel on that row and token alone.
    @Test(arguments: formats)
    func kernelsBatchAndThreadInvariant(_ f: QuantFormat) throws {
        var g = SplitMix64(state: 0xB17 &+ UInt64(f.rawValue))
        defer { try? Parallel.setThreadCount(0) }
        let rows = 37, cols = f.blockValues == 32 ? 288 : 512, nb = cols / f.blockValues, nSub = cols / 32
        let bytes = Self.randomBlocks(f, blocks: rows * nb, &g)
        let w = try Self.weights(f, rows: rows, cols: cols, bytes)
        let maxTokens = 70
        let x = QuantKernelTests.randomActivations(maxTokens * cols, &g)
        var acts = [bc_q8a_block](repeating: bc_q8a_block(), count: maxTokens * nSub)
        x.withUnsafeBufferPointer { xb in
            for t in 0..<maxTokens {
                if f.usesQ8K { bc_quant_q8k_row(xb.baseAddress! + t * cols, &acts[t * nSub], Int64(nSub / 8)) }
                else { bc_quant_q8a_row(xb.baseAddress! + t * cols, &acts[t * nSub], Int64(nSub)) }
            }
        }
        var ref = [Float](repeating: .nan, count: maxTokens * rows)
        let id = try #require(f.kdotID)
        bytes.withUnsafeBytes { raw in
            let base = raw.bindMemory(to: UInt8.self).baseAddress!
            acts.withUnsafeBufferPointer { ab in
                for t in 0..<maxTokens {
                    for o in 0..<rows {
                        bc_kq_dot(id, 0, 1, base + o * nb * f.blockBytes, ab.baseAddress! + t * nSub, 0, Int64(nb), &ref[t * rows + o])
                    }
                }
            }
        }
        for tokens in [1, 3, 4, 5, 8, 13, 64, 67, 70] {
            let want = ref[0..<(tokens * rows)].map(\.bitPattern)
            for threads in [1, 2, 3] {
                try Parallel.setThreadCount(threads)
                for kernel in [QuantGEMM.Kernel.best, .avx2] {
                    var y = [Float](repeating: .nan, count: tokens * rows)
                    x.withUnsafeBufferPointer { xb in
                        y.withUnsafeMutableBufferPointer {
                            QuantGEMM.multiply(xb.baseAddress!, ldx: cols, tokens: tokens, w, $0.baseAddress!, ldy: rows, kernel: kernel)
                        }
                    }
                    let bad = zip(y.map(\.bitPattern), want).filter { $0 != $1 }.count
                    #expect(bad == 0, "\(f.name) \(tokens) tokens, \(threads) threads, \(kernel): \(bad) outputs differ")
                }
            }
        }
    }

    /// A stack of segments in different formats (as Q4_K_M files mix them in one layer's
    /// q/k/v) gives each segment's rows the bits of that segment multiplied alone, and
    /// its rows and byte counts.
    @Test func mixedStackMatchesSeparateMatrices() throws {
        var g = SplitMix64(state: 0x3117)
        let cols = 512, tokens = 19
        let parts: [(format: QuantFormat, rows: Int)] = [(.q4_K, 37), (.q6_K, 13), (.q8_0, 20), (.q5_0, 9), (.q4_1, 6)]
        var blocks: [[UInt8]] = []
        for (f, rows) in parts {
            if f.kdotID != nil { blocks.append(Self.randomBlocks(f, blocks: rows * cols / f.blockValues, &g)) }
            else { blocks.append(QuantKernelTests.randomBlocks(f, rows: rows, cols: cols, &g)) }
        }
        let all = blocks.flatMap { $0 }
        let stack = try QuantizedWeights(parts: parts, cols: cols) { dst in
            all.withUnsafeBytes { dst.copyMemory(from: $0.baseAddress!, byteCount: all.count) }
        }
        #expect(stack.rows == 85 && stack.byteCount == all.count)
        #expect(stack.typeName == "Q4_K+Q6_K+Q8_0+Q5_0+Q4_1")
        let x = QuantKernelTests.randomActivations(tokens * cols, &g)
        let y = QuantKernelTests.product(stack, x, tokens: tokens)
        var first = 0
        for ((f, rows), b) in zip(parts, blocks) {
            let alone = try Self.weights(f, rows: rows, cols: cols, b)
            let ya = QuantKernelTests.product(alone, x, tokens: tokens)
            var bad = 0
            for t in 0..<tokens {
                for r in 0..<rows where y[t * 85 + first + r].bitPattern != ya[t * rows + r].bitPattern { bad += 1 }
            }
            #expect(bad == 0, "\(f.name) segment: \(bad) outputs differ from the matrix alone")
            var r1 = [Float](repeating: 0, count: cols), r2 = r1
            for r in [0, rows - 1] {
                r1.withUnsafeMutableBufferPointer { stack.copyRow(first + r, into: $0.baseAddress!) }
                r2.withUnsafeMutableBufferPointer { alone.copyRow(r, into: $0.baseAddress!) }
                #expect(r1 == r2, "\(f.name) row \(r)")
            }
            first += rows
        }
    }

    /// F16 and BF16 rows stay 16-bit: copyRow equals Formats' dequantize; products (float
    /// activations, weights converted on the fly) match float64 within the float32
    /// accumulation bound (cols/16 + 8)·2⁻²³·Σ|w·x|; every output is the bits of the
    /// one-token kernel whatever the batch, the 4-token grouping or the thread count.
    @Test(arguments: [QuantFormat.f16, .bf16])
    func sixteenBitRowsMatchFloat64AndAreBatchInvariant(_ f: QuantFormat) throws {
        var g = SplitMix64(state: 0x16B &+ UInt64(f.rawValue))
        defer { try? Parallel.setThreadCount(0) }
        for (rows, cols) in [(37, 96), (5, 576), (70, 32)] {
            var bytes: [UInt8] = []
            for _ in 0..<(rows * cols) {
                let v = g.uniform() * (g.uniform() < 0 ? 0.05 : 2)
                let bits = f == .f16 ? Float16(v).bitPattern : UInt16(v.bitPattern >> 16)
                bytes += [UInt8(bits & 0xFF), UInt8(bits >> 8)]
            }
            let w = try Self.weights(f, rows: rows, cols: cols, bytes)
            #expect(w.byteCount == rows * cols * 2)
            var wf = [Float](repeating: .nan, count: rows * cols)
            try bytes.withUnsafeBytes { r in
                try wf.withUnsafeMutableBufferPointer { try dequantize(type: GGMLType(rawValue: f.rawValue)!, data: r, count: rows * cols, into: $0.baseAddress!) }
            }
            var row = [Float](repeating: .nan, count: cols)
            for r in [0, rows / 2, rows - 1] {
                row.withUnsafeMutableBufferPointer { w.copyRow(r, into: $0.baseAddress!) }
                #expect(row == Array(wf[(r * cols)..<(r * cols + cols)]), "\(f.name) row \(r)")
            }
            let maxTokens = 67
            let x = (0..<(maxTokens * cols)).map { _ in g.uniform() + 1e-3 }
            try Parallel.setThreadCount(1)
            let all = QuantKernelTests.product(w, x, tokens: maxTokens)
            var worst = 0.0
            for t in 0..<maxTokens {
                for o in 0..<rows {
                    var ref = 0.0, mag = 0.0
                    for k in 0..<cols {
                        let p = Double(wf[o * cols + k]) * Double(x[t * cols + k])
                        ref += p
                        mag += abs(p)
                    }
                    worst = max(worst, abs(Double(all[t * rows + o]) - ref) / (Double(cols / 16 + 8) * 0x1p-23 * mag + 1e-30))
                }
            }
            #expect(worst <= 1, "\(f.name) \(rows)×\(cols): \(worst) of the accumulation bound")
            for threads in [1, 2, 3] {
                try Parallel.setThreadCount(threads)
                for tokens in [1, 3, 4, 5, 64, 67] {
                    let y = QuantKernelTests.product(w, x, tokens: tokens)
                    let bad = zip(y.map(\.bitPattern), all[0..<(tokens * rows)].map(\.bitPattern)).filter { $0 != $1 }.count
                    #expect(bad == 0, "\(f.name) \(tokens) tokens, \(threads) threads: \(bad) outputs differ")
                }
                for t in [0, 33, 66] {
                    let alone = QuantKernelTests.product(w, Array(x[(t * cols)..<(t * cols + cols)]), tokens: 1)
                    #expect(alone.map(\.bitPattern) == all[(t * rows)..<(t * rows + rows)].map(\.bitPattern), "\(f.name) token \(t) alone")
                }
            }
        }
    }

    @Test func rejectsBadShapes() {
        #expect(throws: BatchCoreError.self) { try QuantizedWeights(format: .q4_K, rows: 2, cols: 288) { _ in } }
        #expect(throws: BatchCoreError.self) { try QuantizedWeights(parts: [], cols: 256) { _ in } }
        #expect(throws: BatchCoreError.self) { try QuantizedWeights(parts: [(.q8_0, 2), (.q6_K, 1)], cols: 96) { _ in } }
    }
}
