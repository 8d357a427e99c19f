import BCCore
import BCKernels
import Foundation
import Testing

/// Hand-run measurement (not a check): seconds of one layer's attention for the last
/// 512-row chunk of a long prompt, SmolLM2-135M's shape (head dim 64, 3 kv heads of 3
/// query heads, cache blocks of 16 rows), 1 thread: every row alone (`Attention.group`,
/// the kernel before issue 16) vs blocks of rows (`Attention.rows`), interleaved,
/// best of 3. Runs only with BATCHCORE_BENCH=1:
///
///     BATCHCORE_BENCH=1 swift test -c release --skip-build --filter AttentionBench
@Suite(.serialized) struct AttentionBench {
    @Test(.enabled(if: ProjectionBench.enabled)) func prefillChunk() throws {
        defer { try? Parallel.setThreadCount(0) }
        try Parallel.setThreadCount(1)
        let hd = 64, kvHeads = 3, group = 3, kvd = hd * kvHeads, chunk = 512, scale = 1 / Float(hd).squareRoot()
        print("positions  per-row s  blocks of 8  16  32 (s)  speed-up at 16")
        for length in [2048, 4096, 8190] {
            let keys = (0..<(length * kvd)).map { _ in Float.random(in: -1...1) }
            let values = (0..<(length * kvd)).map { _ in Float.random(in: -1...1) }
            let q = (0..<(chunk * group * kvHeads * hd)).map { _ in Float.random(in: -1...1) }
            var out = [Float](repeating: 0, count: chunk * group * kvHeads * hd)
            var best = [Double](repeating: .infinity, count: 4)
            keys.withUnsafeBufferPointer { kb in
                values.withUnsafeBufferPointer { vb in
                    q.withUnsafeBufferPointer { qb in
                        out.withUnsafeMutableBufferPointer { ob in
                            let view = KVView(segments: stride(from: 0, to: length, by: 16).map {
                                KVSegment(keys: kb.baseAddress! + $0 * kvd, values: vb.baseAddress! + $0 * kvd,
                                          start: $0, count: min(16, length - $0))
                            }, rowStride: kvd)
                            let first = length - chunk
                            var scores = [Float](repeating: 0, count: 32 * group * length)
                            func perRow() {
                                for r in 0..<chunk {
                                    for g in 0..<kvHeads {
                                        let o = (r * kvHeads + g) * group * hd
                                        Attention.group(q: qb.baseAddress! + o, heads: group, kv: view, offset: g * hd,
                                                        headDim: hd, lo: 0, visible: first + r + 1, scale: scale,
                                                        scores: &scores, out: ob.baseAddress! + o, prefetchRows: r == 0)
                                    }
                                }
                            }
                            func blocks(_ size: Int) {
                                for b in stride(from: 0, to: chunk, by: size) {
                                    for g in 0..<kvHeads {
                                        let queries = (b..<min(chunk, b + size)).map { r in
                                            let o = (r * kvHeads + g) * group * hd
                                            return AttentionQuery(q: qb.baseAddress! + o, out: ob.baseAddress! + o,
                                                                  lo: 0, visible: first + r + 1)
                                        }
                                        queries.withUnsafeBufferPointer {
                                            Attention.rows($0, heads: group, kv: view, offset: g * hd, headDim: hd,
                                                           scale: scale, scores: &scores)
                                        }
                                    }
                                }
                            }
                            for _ in 0..<3 {
                                best[0] = min(best[0], ProjectionBench.time(1) { perRow() })
                                for (k, size) in [8, 16, 32].enumerated() {
                                    best[k + 1] = min(best[k + 1], ProjectionBench.time(1) { blocks(size) })
                                }
                            }
                        }
                    }
                }
            }
            print(String(format: "%9d  %9.3f  %11.3f %6.3f %6.3f     %.2fx", length, best[0], best[1], best[2], best[3],
                         best[0] / best[2]))
        }
    }
}
