import BCCore
import BCKernels
import Foundation
import Testing

/// Hand-run measurement (not a check): GFLOP/s of the projection products for the
/// SmolLM2-135M training shapes, 1 and 2 threads. Runs only with BATCHCORE_BENCH=1:
///
///     BATCHCORE_BENCH=1 swift test -c release --skip-build --filter ProjectionBench
@Suite(.serialized) struct ProjectionBench {
    static var enabled: Bool { ProcessInfo.processInfo.environment["BATCHCORE_BENCH"] == "1" }

    /// Best-of-`reps` seconds of `body` after one warm-up call.
    static func time(_ reps: Int, _ body: () -> Void) -> Double {
        body()
        var best = Double.infinity
        for _ in 0..<reps {
            let t0 = DispatchTime.now().uptimeNanoseconds
            body()
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
        }
        return best
    }

    @Test(.enabled(if: enabled)) func table() throws {
        defer { try? Parallel.setThreadCount(0) }
        // (name, tokens T, cols = input features, rows = output features)
        let shapes: [(String, Int, Int, Int)] = [("o 576->576", 1024, 576, 576), ("qkv 576->960", 1024, 576, 960),
                                                ("gateup 576->3072", 1024, 576, 3072), ("down 1536->576", 1024, 1536, 576),
                                                ("head 576->49152 T128", 128, 576, 49152)]
        let bf16 = BF16GEMM.isSupported
        print("shape                  thr   fwd    dX    dXpk   dW   | bf16: fwd    dX     dW    (GFLOP/s)")
        for (name, t, cols, rows) in shapes {
            let x = (0..<(t * cols)).map { _ in Float.random(in: -1...1) }
            let w = (0..<(rows * cols)).map { _ in Float.random(in: -1...1) }
            let dY = (0..<(t * rows)).map { _ in Float.random(in: -1...1) }
            var y = [Float](repeating: 0, count: t * rows)
            var dX = [Float](repeating: 0, count: t * cols)
            var dW = [Float](repeating: 0, count: rows * cols)
            let packed = try w.withUnsafeBufferPointer { try PackedWeights($0.baseAddress!, rows: rows, cols: cols) }
            let flops = 2.0 * Double(t * rows * cols) * 1e-9
            let reps = rows > 10000 ? 3 : 5
            for threads in [1, 2] {
                try Parallel.setThreadCount(threads)
                let f = Self.time(reps) { x.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in
                    PackedGEMM.multiply(xp.baseAddress!, ldx: cols, tokens: t, packed, yp.baseAddress!, ldy: rows) } } }
                let a = Self.time(reps) { ProjectionBackward.inputGradient(dY, ldDY: rows, tokens: t, weight: w, rows: rows,
                                                                       cols: cols, &dX, ldDX: cols) }
                let b = Self.time(reps) { ProjectionBackward.inputGradient(dY, ldDY: rows, tokens: t, packed: packed, &dX,
                                                                       ldDX: cols) }
                let c = Self.time(reps) { ProjectionBackward.weightGradient(dY, ldDY: rows, x, ldX: cols, tokens: t, rows: rows,
                                                                        cols: cols, &dW) }
                var line = String(format: "%-22@ %2d  %5.1f  %5.1f  %5.1f  %5.1f", name as NSString, threads,
                                  flops / f, flops / a, flops / b, flops / c)
                if bf16 {
                    let bw = try BF16Weights(rows: rows, cols: cols)
                    w.withUnsafeBufferPointer { bw.update(rowMajor: $0.baseAddress!) }
                    let bf = Self.time(reps) { BF16GEMM.forward(x, ldx: cols, tokens: t, bw, &y, ldy: rows) }
                    let ba = Self.time(reps) { BF16GEMM.inputGradient(dY, ldDY: rows, tokens: t, bw, &dX, ldDX: cols, accumulate: false) }
                    let bc = Self.time(reps) { BF16GEMM.weightGradient(dY, ldDY: rows, x, ldX: cols, tokens: t, rows: rows,
                                                                       cols: cols, &dW) }
                    line += String(format: "  |      %5.1f  %5.1f  %5.1f", flops / bf, flops / ba, flops / bc)
                }
                print(line)
            }
        }
    }
}
