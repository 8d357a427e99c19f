import BCCore
import BCModel

/// One micro-batch: whole documents packed one after another (positions restart and
/// attention stays inside each document, see `DocumentBatch`).
///
///     batch.tokens          [T]  the documents' tokens, T ≤ token budget
///     batch.documentLengths [D]  Σ = T
///     batch.wantLogits      [T]  true iff targets[t] ≠ −1
///     targets               [T]  Int32: row t's target token, −1 = not a target
///                                (every document's last row is −1)
///     exampleIndices        [D]  the dataset index of each document
package struct MicroBatch: Equatable, Sendable {
    package var batch: DocumentBatch
    package var targets: [Int32]
    /// Rows with a target (targets ≠ −1).
    package var targetCount: Int
    package var exampleIndices: [Int]

    package var tokenCount: Int { targets.count }

    package static func == (a: MicroBatch, b: MicroBatch) -> Bool {
        a.batch.tokens == b.batch.tokens && a.batch.documentLengths == b.batch.documentLengths
            && a.batch.wantLogits == b.batch.wantLogits && a.targets == b.targets && a.targetCount == b.targetCount
            && a.exampleIndices == b.exampleIndices
    }

    /// Packs `examples` in the given order into one micro-batch (no budget check).
    package init(_ examples: [TrainingExample], indices: [Int]) {
        var b = DocumentBatch()
        var targets: [Int32] = []
        var n = 0
        for e in examples {
            let t = e.rowTargets
            b.tokens += e.tokens
            b.documentLengths.append(e.count)
            for x in t { b.wantLogits.append(x != -1) }
            targets += t
            n += e.targetCount
        }
        batch = b
        self.targets = targets
        targetCount = n
        exampleIndices = indices
    }
}

/// The micro-batches of one optimizer step and their total target count: the step's loss
/// is Σ cross-entropy over all its micro-batches / `targetCount` (not a mean of
/// per-micro-batch means), i.e. each micro-batch's backward uses scale 1/targetCount.
package struct TrainingStep: Equatable, Sendable {
    package var microBatches: [MicroBatch]
    package var targetCount: Int
    /// The data position before and after the step (save `end` in a checkpoint).
    package var start: DataPosition
    package var end: DataPosition
}

/// Packs a dataset's examples, in each epoch's shuffled order, into micro-batches of at
/// most `tokenBudget` tokens, greedily: documents are appended in order while they fit;
/// the next document that does not fit starts the next micro-batch. A document is never
/// split and a micro-batch never spans two epochs. Deterministic: the micro-batches
/// depend only on the data, the seed, the budget and the position.
package struct MicroBatchPacker: Sendable {
    /// What to do with an example longer than the budget.
    package enum OverBudget: Equatable, Sendable {
        /// `init` throws, naming the example. The default.
        case error
        /// Keep its first `tokenBudget` tokens (counted in `truncatedExamples`).
        case truncate
    }

    package let dataset: TrainingDataset
    package let tokenBudget: Int
    package let accumulationSteps: Int
    package let seed: UInt64
    package let epochs: Int
    /// Examples cut to the budget (`.truncate`).
    package let truncatedExamples: Int
    /// The next example to pack.
    package private(set) var position: DataPosition
    /// The examples as packed (truncated where asked).
    let packed: [TrainingExample]
    var orderEpoch: Int
    var order: [Int]

    /// Throws `.invalidArgument` (nothing created) for a budget < 2, accumulation steps or
    /// epochs < 1, a position outside the data (index ≥ count, epoch > epochs, or
    /// epoch = epochs with index ≠ 0), and with `.error` for an example longer than the
    /// budget ("example K has N tokens, more than the micro-batch budget B").
    package init(dataset: TrainingDataset, tokenBudget: Int, accumulationSteps: Int = 1, seed: UInt64,
                 epochs: Int = 1, overBudget: OverBudget = .error, position: DataPosition = DataPosition()) throws {
        guard tokenBudget >= 2 else { throw BatchCoreError.invalid("packer: token budget \(tokenBudget) (at least 2)") }
        guard accumulationSteps >= 1 else {
            throw BatchCoreError.invalid("packer: accumulation steps \(accumulationSteps) (at least 1)")
        }
        guard epochs >= 1 else { throw BatchCoreError.invalid("packer: epochs \(epochs) (at least 1)") }
        guard position.epoch >= 0, position.index >= 0, position.index < dataset.count, position.epoch <= epochs,
              position.epoch < epochs || position.index == 0
        else {
            throw BatchCoreError.invalid(
                "packer: position epoch \(position.epoch) index \(position.index) is outside \(epochs) epoch(s) of \(dataset.count) examples")
        }
        var packed = dataset.examples
        var truncated = 0
        for (k, e) in dataset.examples.enumerated() where e.count > tokenBudget {
            guard overBudget == .truncate else {
                throw BatchCoreError.invalid("example \(k) has \(e.count) tokens, more than the micro-batch budget \(tokenBudget)")
            }
            do { packed[k] = try e.truncated(to: tokenBudget) } catch let error as BatchCoreError {
                throw BatchCoreError.invalid("example \(k): \(error.message)")
            }
            truncated += 1
        }
        self.dataset = dataset
        self.tokenBudget = tokenBudget
        self.accumulationSteps = accumulationSteps
        self.seed = seed
        self.epochs = epochs
        self.truncatedExamples = truncated
        self.position = position
        self.packed = packed
        orderEpoch = position.epoch
        order = dataset.order(epoch: position.epoch, seed: seed)
    }

    /// True when every epoch has been packed.
    package var isFinished: Bool { position.epoch >= epochs }

    /// The next micro-batch (nil when finished), advancing the position past it.
    package mutating func nextMicroBatch() -> MicroBatch? {
        guard !isFinished else { return nil }
        if orderEpoch != position.epoch {
            order = dataset.order(epoch: position.epoch, seed: seed)
            orderEpoch = position.epoch
        }
        var tokens = 0
        var i = position.index
        var picked: [Int] = []
        while i < order.count {
            let e = packed[order[i]]
            guard tokens + e.count <= tokenBudget else { break }
            tokens += e.count
            picked.append(order[i])
            i += 1
        }
        position = i < order.count ? DataPosition(epoch: position.epoch, index: i)
            : DataPosition(epoch: position.epoch + 1, index: 0)
        return MicroBatch(picked.map { packed[$0] }, indices: picked)
    }

    /// The next optimizer step: the next `accumulationSteps` micro-batches (fewer at the
    /// very end of the data) and their total target count; nil when finished.
    package mutating func nextStep() -> TrainingStep? { nextStep(microBatches: accumulationSteps) }

    /// The next step of `microBatches` micro-batches (a batch-size controller's choice;
    /// fewer at the very end of the data); nil when finished.
    package mutating func nextStep(microBatches count: Int) -> TrainingStep? {
        let start = position
        var batches: [MicroBatch] = []
        var n = 0
        while batches.count < max(count, 1), let b = nextMicroBatch() {
            n += b.targetCount
            batches.append(b)
        }
        guard !batches.isEmpty else { return nil }
        return TrainingStep(microBatches: batches, targetCount: n, start: start, end: position)
    }

    /// All micro-batches of `examples` in their given order (an eval set: no shuffle),
    /// packed as above. Throws for an example longer than the budget with `.error`.
    package static func pack(_ examples: [TrainingExample], tokenBudget: Int,
                             overBudget: OverBudget = .error) throws -> [MicroBatch] {
        let dataset = try TrainingDataset(examples: examples)
        var p = try MicroBatchPacker(dataset: dataset, tokenBudget: tokenBudget, seed: 0, overBudget: overBudget)
        p.order = Array(0..<examples.count)
        var out: [MicroBatch] = []
        while let b = p.nextMicroBatch() { out.append(b) }
        return out
    }
}
