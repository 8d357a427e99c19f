import BCCore
import BCOptim
import Testing

/// Steps are chunked into fixed work items, so results must not depend on the
/// thread count, and a saved state must resume bit-identically.
@Suite(.serialized) struct OptimizerDeterminismTests {
    /// Sizes spanning several 64Ki-element work items plus small tensors sharing one.
    static let sizes = [3, 70_001, 17, 150_000, 1, 1025]

    static func run(_ algorithm: OptimizerAlgorithm, threads: Int, steps: Int, seed: UInt64,
                    saveAfter: Int? = nil) throws -> (params: [[Float]], state: [UInt8]?) {
        try Parallel.setThreadCount(threads)
        defer { try? Parallel.setThreadCount(0) }
        var rng = SplitMix64(state: seed)
        var params = sizes.map { n in (0..<n).map { _ in rng.uniform() } }
        var grads = sizes.map { [Float](repeating: 0, count: $0) }
        var saved: [UInt8]?
        try withPointers(&params, &grads) { p, g in
            let opt = Optimizer(algorithm: algorithm)
            var h = OptimizerHyperparameters.defaults(for: algorithm)
            h.weightDecay = 0.01
            h.momentum = algorithm == .adagrad || algorithm == .adam ? 0 : 0.9
            if algorithm == .adam { h.amsgrad = true }
            try opt.addGroup(h)
            for k in sizes.indices { try opt.addTensor(group: 0, name: "t\(k)", param: p[k], grad: g[k], count: sizes[k]) }
            for s in 1...steps {
                for k in sizes.indices { for i in 0..<sizes[k] { g[k][i] = p[k][i] * 0.5 + rng.uniform() * 0.1 } }
                try opt.step(OptimizerStepOptions(maxGradNorm: 50))
                if s == saveAfter { saved = opt.serializeState() }
            }
        }
        return (params, saved)
    }

    static func withPointers(_ a: inout [[Float]], _ b: inout [[Float]],
                             _ body: ([UnsafeMutablePointer<Float>], [UnsafeMutablePointer<Float>]) throws -> Void) rethrows {
        let pa = a.map { arr -> UnsafeMutablePointer<Float> in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: arr.count); p.initialize(from: arr, count: arr.count); return p
        }
        let pb = b.map { arr -> UnsafeMutablePointer<Float> in
            let p = UnsafeMutablePointer<Float>.allocate(capacity: arr.count); p.initialize(from: arr, count: arr.count); return p
        }
        defer { (pa + pb).forEach { $0.deallocate() } }
        try body(pa, pb)
        for k in a.indices { a[k] = Array(UnsafeBufferPointer(start: pa[k], count: a[k].count)) }
    }

    @Test(arguments: OptimizerAlgorithm.allCases)
    func threadCountDoesNotChangeResults(_ algorithm: OptimizerAlgorithm) throws {
        let one = try Self.run(algorithm, threads: 1, steps: 6, seed: 42)
        let two = try Self.run(algorithm, threads: 2, steps: 6, seed: 42)
        #expect(one.params == two.params)
        #expect(one.params[1] != (try Self.run(algorithm, threads: 1, steps: 0 + 1, seed: 42)).params[1])
    }

    /// Save after 3 steps, restore into a fresh optimizer over the same parameter
    /// values, continue: bit-identical to never stopping.
    @Test(arguments: OptimizerAlgorithm.allCases)
    func resumeIsBitIdentical(_ algorithm: OptimizerAlgorithm) throws {
        let reference = try Self.run(algorithm, threads: 2, steps: 3, seed: 7, saveAfter: 3)
        let state = try #require(reference.state)
        let full = try Self.run(algorithm, threads: 2, steps: 6, seed: 7)

        // Rebuild: the parameters after 3 steps, the rng advanced past 3 steps of grads.
        var rng = SplitMix64(state: 7)
        _ = Self.sizes.map { n in (0..<n).map { _ in rng.uniform() } }
        var params = reference.params
        var grads = Self.sizes.map { [Float](repeating: 0, count: $0) }
        // Replay the random draws of steps 1-3 (grads depend on params; only the draws matter).
        for _ in 1...3 { for n in Self.sizes { for _ in 0..<n { _ = rng.uniform() } } }
        try Self.withPointers(&params, &grads) { p, g in
            let opt = Optimizer(algorithm: algorithm)
            try opt.addGroup(OptimizerHyperparameters.defaults(for: algorithm))  // replaced by the loaded state
            for k in Self.sizes.indices { try opt.addTensor(group: 0, name: "t\(k)", param: p[k], grad: g[k], count: Self.sizes[k]) }
            try state.withUnsafeBytes { try opt.loadState($0) }
            #expect(opt.groups[0].step == 3)
            for _ in 4...6 {
                for k in Self.sizes.indices { for i in 0..<Self.sizes[k] { g[k][i] = p[k][i] * 0.5 + rng.uniform() * 0.1 } }
                try opt.step(OptimizerStepOptions(maxGradNorm: 50))
            }
        }
        #expect(params == full.params)
    }

    @Test func corruptStateIsRejectedAndChangesNothing() throws {
        let saved = try #require(try Self.run(.adamw, threads: 1, steps: 2, seed: 3, saveAfter: 2).state)
        var p = [Float](repeating: 1, count: 4), g = [Float](repeating: 0.5, count: 4)
        let opt = Optimizer(algorithm: .adamw)
        try opt.addGroup(.defaults(for: .adamw))
        try p.withUnsafeMutableBufferPointer { pp in
            try g.withUnsafeBufferPointer { gp in
                try opt.addTensor(group: 0, name: "t0", param: pp.baseAddress!, grad: gp.baseAddress!, count: 4)
                try opt.step()
            }
        }
        let before = opt.serializeState()
        // Structure mismatch (different tensors), bit flips and truncation are all format errors.
        var cases: [[UInt8]] = [saved, Array(before.dropLast()), Array(before.prefix(20))]
        for k in stride(from: 0, to: before.count, by: max(1, before.count / 40)) {
            var flipped = before
            flipped[k] ^= 0x10
            cases.append(flipped)
        }
        for bytes in cases {
            #expect(throws: BatchCoreError.self) { try bytes.withUnsafeBytes { try opt.loadState($0) } }
            #expect(opt.serializeState() == before)
        }
        try before.withUnsafeBytes { try opt.loadState($0) }
        #expect(opt.serializeState() == before)
    }
}
