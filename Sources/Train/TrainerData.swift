import BCCore
import BCModel
import BCOptim
import BCTokenizer

/// The data a trainer reads itself: the training set with its packer (shuffled order,
/// position), the eval set, and how they were read.
package struct TrainerData: Sendable {
    package var train: TrainingDataset
    package var eval: TrainingDataset?
    package var packer: MicroBatchPacker
    package var options: DataLoadOptions
    package var seed: UInt64
    package var epochs: Int
    /// Steps all epochs take (counted by packing once at load).
    package var totalSteps: Int
    package var report: DataLoadReport
}

extension Trainer {
    /// Loads the training set from `path` (see `TrainingDataLoader`), holds out
    /// `evalFraction` of it as the eval set, and starts at the first step. Replaces any
    /// earlier data; on error nothing changes.
    package func loadData(path: String, tokenizer: Tokenizer, options: DataLoadOptions, evalFraction: Double,
                          seed: UInt64, epochs: Int) throws -> TrainerData {
        guard evalFraction >= 0, evalFraction < 1 else {
            throw BatchCoreError.invalid("eval fraction \(evalFraction) outside 0 ..< 1")
        }
        guard epochs >= 1, epochs <= 1 << 20 else { throw BatchCoreError.invalid("epochs \(epochs) outside 1...\(1 << 20)") }
        var (all, report) = try TrainingDataset.load(path: path, tokenizer: tokenizer, options: options)
        var eval: TrainingDataset?
        if evalFraction > 0 {
            let (t, e) = try all.split(evalFraction: evalFraction, seed: seed)
            all = t
            eval = e
        }
        let overBudget: MicroBatchPacker.OverBudget = options.overLength == .truncate ? .truncate : .error
        let packer = try MicroBatchPacker(dataset: all, tokenBudget: self.options.microBatchTokens,
                                          accumulationSteps: globalAccumulationSteps, seed: seed, epochs: epochs,
                                          overBudget: overBudget)
        var counter = packer
        var steps = 0
        while counter.nextStep() != nil { steps += 1 }
        let d = TrainerData(train: all, eval: eval, packer: packer, options: options, seed: seed, epochs: epochs,
                            totalSteps: steps, report: report)
        data = d
        stepCount = 0
        tokensSeen = 0
        discardGradients()
        return d
    }

    /// Replaces the eval set with the examples of `path`.
    package func loadEval(path: String, tokenizer: Tokenizer, options: DataLoadOptions) throws -> TrainingDataset {
        guard data != nil else { throw BatchCoreError.badState("load the training data first") }
        let (set, _) = try TrainingDataset.load(path: path, tokenizer: tokenizer, options: options)
        data?.eval = set
        return set
    }

    /// Runs the micro-batches of the next step of the training set (forward + backward,
    /// accumulating) and moves the data position past them; `step` then takes the
    /// optimizer step. Returns false when every epoch is done (nothing changes). On an
    /// error the gradients are discarded and the position stays.
    package func accumulateNextStep() throws -> Bool {
        guard var d = data else { throw BatchCoreError.badState("no training data: load it first") }
        guard let step = d.packer.nextStep(microBatches: nextMicroBatches) else { return false }
        discardGradients()
        // |G_small|²: after the first micro-batch the accumulator holds exactly its
        // summed-loss gradient, so one read pass over it gives the small batch's norm
        // (no copy); the end of the step gives the big one (`finishDataStep`).
        var smallSum: Double?
        do {
            // Data-parallel: this rank's share of the global step; the pair (first local
            // micro-batch, local step) feeds the noise estimate.
            let local = localMicroBatches(step.microBatches)
            for (i, mb) in local.enumerated() {
                try microBatch(mb.batch, targets: mb.targets)
                if i == 0, local.count > 1 { smallSum = GradientNoiseScale.squaredNorm(gradientsOf: parameters) }
            }
        } catch {
            discardGradients()
            throw error
        }
        data = d
        stepCount += 1
        tokensSeen += step.microBatches.reduce(0) { $0 + $1.tokenCount }
        let local = localMicroBatches(step.microBatches)
        finishDataStep(microBatches: local.count, smallTargets: local.first?.targetCount ?? 0,
                       smallSum: smallSum, bigTargets: local.reduce(0) { $0 + $1.targetCount })
        return true
    }

    /// One optimizer step from the training set (`accumulateNextStep`, then `step`);
    /// nil when every epoch is done. A skipped (non-finite) step still consumes its data
    /// and counts as a step: the error is thrown after the position moved, so a caller
    /// can report it and go on.
    package func trainStep(_ optimizer: Optimizer, options o: OptimizerStepOptions = .init()) throws
        -> (totals: TrainingTotals, report: OptimizerStepReport)? {
        guard try accumulateNextStep() else { return nil }
        return try step(optimizer, options: o)
    }

    /// Summed loss over a whole data set (no gradient), in micro-batches of the budget.
    package func evaluate(_ set: TrainingDataset) throws -> TrainingTotals {
        let overBudget: MicroBatchPacker.OverBudget = data?.options.overLength == .truncate ? .truncate : .error
        var total = TrainingTotals()
        for mb in try MicroBatchPacker.pack(set.examples, tokenBudget: options.microBatchTokens, overBudget: overBudget) {
            let t = try evaluate(mb.batch, targets: mb.targets)
            total.lossSum += t.lossSum
            total.targets += t.targets
            total.tokens += t.tokens
            total.microBatches += 1
        }
        return total
    }
}
