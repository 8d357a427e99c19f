import BCCore
import BCTokenizer

/// The examples of a training (or eval) set, tokenized once, and their order per epoch.
///
/// Epoch e visits every example exactly once, in the order `order(epoch: e, seed:)`: a
/// Fisher–Yates permutation drawn from `ShuffleRNG(seed: seed, stream: e)` — the same
/// for a seed on every run and platform, different from epoch to epoch.
package struct TrainingDataset: Equatable, Sendable {
    package let examples: [TrainingExample]
    package let tokenCount: Int
    package let targetCount: Int

    /// Throws `.invalidArgument` for an empty set.
    package init(examples: [TrainingExample]) throws {
        guard !examples.isEmpty else { throw BatchCoreError.invalid("dataset: no examples") }
        self.examples = examples
        var t = 0, n = 0
        for e in examples {
            t += e.count
            n += e.targetCount
        }
        tokenCount = t
        targetCount = n
    }

    /// Loads a data file (`TrainingDataLoader.load`).
    package static func load(path: String, tokenizer: Tokenizer,
                             options: DataLoadOptions) throws -> (dataset: TrainingDataset, report: DataLoadReport) {
        let (examples, report) = try TrainingDataLoader.load(path: path, tokenizer: tokenizer, options: options)
        return (try TrainingDataset(examples: examples), report)
    }

    package var count: Int { examples.count }

    /// The visiting order of epoch `epoch` (≥ 0): a permutation of 0..<count.
    package func order(epoch: Int, seed: UInt64) -> [Int] {
        var rng = ShuffleRNG(seed: seed, stream: UInt64(truncatingIfNeeded: epoch))
        return rng.permutation(examples.count)
    }

    /// A held-out split: `round(count · evalFraction)` examples (at least 1), chosen by a
    /// permutation from `seed` (stream `UInt64.max`, distinct from every epoch's), go to
    /// `eval`; the rest to `train`. Both keep the original relative order. Throws when
    /// `evalFraction` is not in (0, 1) or either side would be empty.
    package func split(evalFraction: Double, seed: UInt64) throws -> (train: TrainingDataset, eval: TrainingDataset) {
        guard evalFraction > 0, evalFraction < 1 else {
            throw BatchCoreError.invalid("dataset: eval fraction \(evalFraction) is not in (0, 1)")
        }
        let n = max(1, Int((Double(examples.count) * evalFraction).rounded()))
        guard n < examples.count else {
            throw BatchCoreError.invalid("dataset: \(examples.count) example(s) cannot be split into train and eval")
        }
        var rng = ShuffleRNG(seed: seed, stream: UInt64.max)
        let p = rng.permutation(examples.count)
        var isEval = [Bool](repeating: false, count: examples.count)
        for i in p[0..<n] { isEval[i] = true }
        var train: [TrainingExample] = [], eval: [TrainingExample] = []
        for (i, e) in examples.enumerated() {
            if isEval[i] { eval.append(e) } else { train.append(e) }
        }
        return (try TrainingDataset(examples: train), try TrainingDataset(examples: eval))
    }
}

/// Where a run is in its data: the next example to pack is `order(epoch)[index]`.
/// Saved in checkpoints; a run resumed from it packs exactly the micro-batches an
/// uninterrupted run packs from there (same seed, data and packing options).
package struct DataPosition: Equatable, Sendable {
    package var epoch: Int
    package var index: Int

    package init(epoch: Int = 0, index: Int = 0) {
        self.epoch = epoch
        self.index = index
    }

    static let magic: UInt32 = 0x5044_4342  // "BCDP" little-endian

    /// 20 bytes: magic "BCDP", epoch (u64 LE), index (u64 LE).
    package var encoded: [UInt8] {
        var w = ByteWriter()
        w.u32(Self.magic)
        w.u64(UInt64(clamping: epoch))
        w.u64(UInt64(clamping: index))
        return w.bytes
    }

    /// Reads `encoded`; throws `.format` for anything else.
    package init(encoded bytes: [UInt8]) throws {
        guard bytes.count == 20 else { throw BatchCoreError.format("data position: \(bytes.count) bytes, expected 20") }
        (epoch, index) = try bytes.withUnsafeBytes { raw in
            var r = ByteReader(raw, what: "data position")
            guard try r.u32() == Self.magic else { throw BatchCoreError.format("data position: bad magic") }
            let e = try r.u64(), i = try r.u64()
            guard let e = Int(exactly: e), let i = Int(exactly: i), e >= 0, i >= 0 else {
                throw BatchCoreError.format("data position: epoch \(e) / index \(i) out of range")
            }
            return (e, i)
        }
    }
}
