import BCCore
import BCModel
import BCOptim
import BCTrain
import Testing

/// The gradient all-reduce's buckets (Train/DataParallel.swift), on the tiny fixture model,
/// with a fake second rank that mirrors this one (contributes the same values, so every
/// sum is exactly 2x): odd bucket sizes put buckets inside one tensor (reduced in place)
/// and across tensor boundaries (gathered into staging and scattered back); every float
/// must come back exactly doubled, in ceil(P / bucket) calls of the stated sizes, after
/// one call for the step's totals (counts summed exactly).
@Suite(.serialized) struct DataParallelTests {
    static let modelDir = Repo.path("Tests/fixtures/train/tiny_tied")

    /// A rank-0 collectives whose peer (rank 1) mirrors every call except the group
    /// probe (it sends 1 and its rank) and the weights check (it reports no mismatch).
    final class Mirror {
        var sizes: [Int] = []
        var failAt = 0
    }

    static func mirror(_ m: Mirror, bucket: Int) -> TrainerCollectives {
        var c = TrainerCollectives(rank: 0, worldSize: 2, allReduceSum: { p, n in
            m.sizes.append(n)
            if m.sizes.count == m.failAt { throw BatchCoreError.io("fake failure") }
            switch m.sizes.count {
            case 1: p[0] += 1; p[1] += 1              // the peer's (1, rank 1)
            case 2: break                              // the peer's mismatch flag: 0
            default: for i in 0..<n { p[i] += p[i] }   // a peer with the same values
            }
        }, broadcast: { _, _, _ in })
        c.bucketFloats = bucket
        return c
    }

    @Test(arguments: [997, 4096, 1 << 22])
    func bucketsSumEveryFloatOnceInOrder(bucket: Int) throws {
        let (model, _) = try HFModel.load(path: Self.modelDir)
        var o = TrainerOptions()
        o.microBatchTokens = 32
        let t = try Trainer(model: model, options: o)
        let m = Mirror()
        try t.setCollectives(Self.mirror(m, bucket: bucket))
        #expect(m.sizes == [2, 1])
        let tokens: [Int32] = [3, 17, 42, 8, 25, 11, 56, 30, 9]
        let targets: [Int32] = [17, 42, 8, 25, -1, 56, 30, 9, -1]
        try t.microBatch(DocumentBatch(tokens: tokens, documentLengths: [5, 4], wantLogits: targets.map { $0 >= 0 }),
                         targets: targets)
        let local = t.parameters.map { Array(UnsafeBufferPointer(start: $0.gradient!, count: $0.count)) }
        #expect(local.contains { $0.contains { $0 != 0 } })
        let g = try t.allReduceStep(t.pending)
        #expect(g.targets == 2 * t.pending.targets && g.tokens == 18 && g.microBatches == 2)
        #expect(abs(g.lossSum - 2 * t.pending.lossSum) <= 1e-12 * abs(g.lossSum))
        let total = t.parameters.reduce(0) { $0 + $1.count }
        let buckets = Trainer.bucketCount(parameterCount: total)
        let expected = [14] + (0..<((total + bucket - 1) / bucket)).map { min(bucket, total - $0 * bucket) }
        #expect(Array(m.sizes.dropFirst(2)) == expected)
        if bucket == Trainer.bucketFloats { #expect(m.sizes.count == 2 + 1 + buckets) }
        for (p, l) in zip(t.parameters, local) {
            let now = Array(UnsafeBufferPointer(start: p.gradient!, count: p.count))
            let doubled = now == l.map { $0 + $0 }
            #expect(doubled, "\(p.name): not exactly twice the local gradient")
        }
    }

    @Test func failingCallbackChangesNoWeight() throws {
        let (model, _) = try HFModel.load(path: Self.modelDir)
        var o = TrainerOptions()
        o.microBatchTokens = 32
        let t = try Trainer(model: model, options: o)
        let m = Mirror()
        try t.setCollectives(Self.mirror(m, bucket: 1000))
        let opt = Optimizer(algorithm: .adamw)
        try t.register(in: opt, group: try opt.addGroup(OptimizerHyperparameters.defaults(for: .adamw)))
        let before = t.parameters.map { Array(UnsafeBufferPointer(start: $0.values!, count: $0.count)) }
        let tokens: [Int32] = [3, 17, 42, 8, 25]
        let targets: [Int32] = [17, 42, 8, 25, -1]
        for failAt in [3, 4, 50] {   // the totals, the first bucket, a later bucket
            m.failAt = failAt
            try t.microBatch(DocumentBatch(tokens: tokens, documentLengths: [5], wantLogits: targets.map { $0 >= 0 }),
                             targets: targets)
            m.sizes = [0, 0]   // setCollectives's two calls are done: count from the step's first
            #expect(throws: BatchCoreError.self) { try t.step(opt) }
            #expect(t.pending.microBatches == 0)
            #expect(opt.groups[0].step == 0)
            let now = t.parameters.map { Array(UnsafeBufferPointer(start: $0.values!, count: $0.count)) }
            let unchanged = now == before
            #expect(unchanged)
        }
    }
}
