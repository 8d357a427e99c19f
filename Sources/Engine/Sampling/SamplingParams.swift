import BCCore
/// Parameters of one sequence's token sampler.
///
/// The filters run in llama.cpp's default chain order (common/sampling.cpp's default
/// sampler list, restricted to the samplers batchcore implements):
/// penalties → top-k → top-p → min-p → temperature → draw. See `Sampler`.
///
/// The "off" value of each knob makes that stage a no-op, exactly as in llama.cpp:
/// `temperature == 0` is greedy, `topK == 0`, `topP == 1`, `minP == 0`,
/// `repetitionPenalty == 1`, `frequencyPenalty == 0`, `presencePenalty == 0`,
/// `penaltyLastN == 0`.
package struct SamplingParams: Sendable, Equatable, Hashable {
    /// Softmax temperature applied after the filters. 0 selects greedy decoding (argmax
    /// of the penalized logits); must be finite and >= 0.
    package var temperature: Float
    /// Keep only the `topK` most likely tokens; 0 = off. Must be >= 0.
    package var topK: Int
    /// Nucleus sampling: keep the smallest most-likely set whose cumulative probability
    /// is >= `topP` (at least one token). 1 = off; must be in (0, 1].
    package var topP: Float
    /// Keep tokens whose probability is >= `minP` × the most likely token's probability.
    /// 0 = off; must be in [0, 1].
    package var minP: Float
    /// CTRL-style repetition penalty with llama.cpp's sign fix (positive logits are
    /// divided, non-positive ones multiplied). 1 = off; must be finite and > 0.
    package var repetitionPenalty: Float
    /// Subtracted `count` times from a recent token's logit (OpenAI-style). 0 = off.
    package var frequencyPenalty: Float
    /// Subtracted once from the logit of any token present in the recent window. 0 = off.
    package var presencePenalty: Float
    /// How many of the most recent history tokens the penalties look at:
    /// -1 = the whole history, 0 = none (penalties off). Default 64 (llama.cpp's).
    package var penaltyLastN: Int
    /// Seed of the sampler's `SamplerRNG`.
    package var seed: UInt64

    /// Defaults are llama.cpp's `common_params_sampling` defaults (temp 0.8, top-k 40,
    /// top-p 0.95, min-p 0.05, penalties off with a 64-token window).
    package init(
        temperature: Float = 0.8, topK: Int = 40, topP: Float = 0.95, minP: Float = 0.05,
        repetitionPenalty: Float = 1, frequencyPenalty: Float = 0, presencePenalty: Float = 0,
        penaltyLastN: Int = 64, seed: UInt64 = 0
    ) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repetitionPenalty = repetitionPenalty
        self.frequencyPenalty = frequencyPenalty
        self.presencePenalty = presencePenalty
        self.penaltyLastN = penaltyLastN
        self.seed = seed
    }

    /// Greedy decoding, no filters, no penalties.
    package static let greedy = SamplingParams(
        temperature: 0, topK: 0, topP: 1, minP: 0)

    /// Plain ancestral sampling from the model's distribution: temperature 1, every
    /// filter and penalty off.
    package static func unfiltered(seed: UInt64 = 0) -> SamplingParams {
        SamplingParams(temperature: 1, topK: 0, topP: 1, minP: 0, seed: seed)
    }

    /// True when the penalty stage changes nothing (llama.cpp's early return).
    package var penaltiesDisabled: Bool {
        penaltyLastN == 0
            || (repetitionPenalty == 1 && frequencyPenalty == 0 && presencePenalty == 0)
    }

    /// Throws `BatchCoreError.invalid` naming the first out-of-range field.
    package func validate() throws {
        guard temperature.isFinite, temperature >= 0 else {
            throw BatchCoreError.invalid("sampling: temperature must be finite and >= 0 (got \(temperature))")
        }
        guard topK >= 0 else {
            throw BatchCoreError.invalid("sampling: top_k must be >= 0 (got \(topK))")
        }
        guard topP.isFinite, topP > 0, topP <= 1 else {
            throw BatchCoreError.invalid("sampling: top_p must be in (0, 1] (got \(topP))")
        }
        guard minP.isFinite, minP >= 0, minP <= 1 else {
            throw BatchCoreError.invalid("sampling: min_p must be in [0, 1] (got \(minP))")
        }
        guard repetitionPenalty.isFinite, repetitionPenalty > 0 else {
            throw BatchCoreError.invalid(
                "sampling: repetition_penalty must be finite and > 0 (got \(repetitionPenalty))")
        }
        guard frequencyPenalty.isFinite else {
            throw BatchCoreError.invalid("sampling: frequency_penalty must be finite (got \(frequencyPenalty))")
        }
        guard presencePenalty.isFinite else {
            throw BatchCoreError.invalid("sampling: presence_penalty must be finite (got \(presencePenalty))")
        }
        guard penaltyLastN >= -1 else {
            throw BatchCoreError.invalid("sampling: penalty_last_n must be >= -1 (got \(penaltyLastN))")
        }
    }
}
