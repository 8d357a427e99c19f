import BCCore
import BCModel
import BCEngine
import CBatchCore

let defaultSamplingParams: bc_sampling_params = {
    let s = SamplingParams()
    return bc_sampling_params(
        struct_size: UInt32(MemoryLayout<bc_sampling_params>.size), temperature: s.temperature, top_k: Int32(s.topK),
        top_p: s.topP, min_p: s.minP, repetition_penalty: s.repetitionPenalty, frequency_penalty: s.frequencyPenalty,
        presence_penalty: s.presencePenalty, penalty_last_n: Int32(s.penaltyLastN), reserved0: 0, seed: s.seed)
}()

extension bc_sampling_params {
    var core: SamplingParams {
        SamplingParams(temperature: temperature, topK: Int(top_k), topP: top_p, minP: min_p,
                       repetitionPenalty: repetition_penalty, frequencyPenalty: frequency_penalty,
                       presencePenalty: presence_penalty, penaltyLastN: Int(penalty_last_n), seed: seed)
    }
}

/// A fresh copy per use: a global constant of a C struct holding pointers is not Sendable.
private var defaultGenerate: bc_generate_params {
    bc_generate_params(
        struct_size: UInt32(MemoryLayout<bc_generate_params>.size), seq_id: 0, max_tokens: 128, add_special: 1,
        parse_special: 1, stop_at_eog: 1, callback: nil, user_data: nil)
}

@c @implementation
public func bc_sampling_params_default(_ out: UnsafeMutablePointer<bc_sampling_params>?, _ size: Int) -> bc_status {
    abiCall { try writeDefault(defaultSamplingParams, out, size, "bc_sampling_params") }
}

@c @implementation
public func bc_generate_params_default(_ out: UnsafeMutablePointer<bc_generate_params>?, _ size: Int) -> bc_status {
    abiCall { try writeDefault(defaultGenerate, out, size, "bc_generate_params") }
}

@c @implementation
public func bc_generate(_ ctx: OpaquePointer?, _ prompt: UnsafePointer<CChar>?, _ gen: UnsafePointer<bc_generate_params>?,
                        _ sampling: UnsafePointer<bc_sampling_params>?,
                        _ result: UnsafeMutablePointer<bc_generate_result>?) -> bc_status {
    abiCall {
        let c = try object(ctx, as: InferenceContext.self, "ctx")
        let prompt = try required(prompt, "prompt")
        let g = try readParams(gen, defaults: defaultGenerate, "bc_generate_params")
        let s = try readParams(sampling, defaults: defaultSamplingParams, "bc_sampling_params").core
        try s.validate()
        guard g.seq_id >= 0 else { throw BatchCoreError.invalid("bc_generate: seq_id must be >= 0") }
        guard g.max_tokens >= 0 else { throw BatchCoreError.invalid("bc_generate: max_tokens must be >= 0") }
        if let result {
            let size = UnsafeRawPointer(result).load(as: UInt32.self)
            guard size >= 4, size <= 1 << 16 else {
                throw BatchCoreError.invalid("bc_generate_result.struct_size is \(size); set it to sizeof(bc_generate_result)")
            }
        }
        let tokens = c.model.tokenizer.encode(String(cString: prompt), addSpecial: g.add_special != 0,
                                              parseSpecial: g.parse_special != 0)
        guard c.cache.length(of: Int(g.seq_id)) + tokens.count + Int(g.max_tokens) <= c.maxPositions else {
            throw BatchCoreError.invalid("bc_generate: prompt (\(tokens.count) tokens) + max_tokens exceed n_ctx \(c.maxPositions)")
        }
        let callback = g.callback, user = g.user_data
        let r = try Generator.generate(
            model: c.model, cache: c.cache, sequence: Int(g.seq_id), prompt: tokens, sampling: s,
            maxTokens: Int(g.max_tokens), stopAtEndOfGeneration: g.stop_at_eog != 0,
            adapter: c.sequenceAdapters[Int(g.seq_id)]
        ) { token, text in
            guard let callback else { return true }
            // NUL-terminated for convenience, though piece_len is the length.
            let utf8 = Array(text.utf8) + [0]
            return utf8.withUnsafeBufferPointer { b in
                b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) {
                    callback(token, $0, b.count - 1, user) == 0
                }
            }
        }
        if let result {
            let v = bc_generate_result(struct_size: 0, prompt_tokens: Int32(r.promptTokens),
                                       generated_tokens: Int32(r.generatedTokens), stop_reason: r.stopReason.rawValue,
                                       prompt_seconds: r.promptSeconds, generate_seconds: r.generateSeconds)
            try writeSized(v, to: result, "bc_generate_result")
        }
    }
}
