import BCCore
import BCModel
import CBatchCore

/// A fresh copy per use: a global constant of a C struct holding pointers is not Sendable.
private var defaultModelParams: bc_model_params {
    bc_model_params(
        struct_size: UInt32(MemoryLayout<bc_model_params>.size), reserved0: 0, progress: nil, progress_user_data: nil,
        weights: Int32(BC_MODEL_WEIGHTS_NATIVE.rawValue), reserved1: 0)
}

@c @implementation
public func bc_model_params_default(_ out: UnsafeMutablePointer<bc_model_params>?, _ size: Int) -> bc_status {
    abiCall { try writeDefault(defaultModelParams, out, size, "bc_model_params") }
}

@c @implementation
public func bc_model_load(_ path: UnsafePointer<CChar>?, _ params: UnsafePointer<bc_model_params>?,
                          _ out: UnsafeMutablePointer<OpaquePointer?>?) -> bc_status {
    abiCall {
        let path = try required(path, "path")
        let out = try required(out, "out")
        let p = try readParams(params, defaults: defaultModelParams, "bc_model_params")
        let callback = p.progress, user = p.progress_user_data
        let mode: WeightMode
        switch p.weights {
        case Int32(BC_MODEL_WEIGHTS_NATIVE.rawValue): mode = .native
        case Int32(BC_MODEL_WEIGHTS_F32.rawValue): mode = .float32
        default: throw BatchCoreError.invalid("bc_model_params.weights is \(p.weights), not a bc_model_weights")
        }
        let model = try LanguageModel(path: String(cString: path), weights: mode,
                                      progress: callback.map { cb in { cb(Float($0), user) } })
        out.pointee = retainHandle(model)
    }
}

@c @implementation
public func bc_model_free(_ model: OpaquePointer?) {
    releaseHandle(model, as: LanguageModel.self)
}

@c @implementation
public func bc_model_get_info(_ model: OpaquePointer?, _ info: UnsafeMutablePointer<bc_model_info>?) -> bc_status {
    abiCall {
        let m = try object(model, as: LanguageModel.self, "model")
        let info = try required(info, "info")
        let c = m.config
        var v = bc_model_info()
        v.n_params = Int64(m.transformer.weights.parameterCount)
        v.n_layer = Int32(c.layerCount)
        v.n_embd = Int32(c.embeddingDim)
        v.n_head = Int32(c.headCount)
        v.n_head_kv = Int32(c.kvHeadCount)
        v.n_ff = Int32(c.feedForwardDim)
        v.n_vocab = Int32(c.vocabSize)
        v.n_ctx_train = Int32(c.contextLength)
        v.rope_freq_base = c.ropeBase
        v.bos_token = m.tokenizer.bos ?? -1
        v.eos_token = m.tokenizer.eos ?? -1
        v.add_bos = m.tokenizer.addBOS ? 1 : 0
        let storage = m.transformer.weights.storageByType
        v.weight_bytes = Int64(storage.reduce(0) { $0 + $1.bytes })
        let entries = storage.sorted { $0.bytes > $1.bytes }
            .map { t -> String in
                let tenths = (t.bytes * 10 + 524_288) / 1_048_576
                return "\(t.type):\(tenths / 10).\(tenths % 10)MiB"
            }
        withUnsafeMutableBytes(of: &v.weight_types) { buf in
            // Whole entries only, largest first, as many as fit (k-quant files list up to 6).
            var types = ""
            for e in entries where types.utf8.count + (types.isEmpty ? 0 : 1) + e.utf8.count <= buf.count - 1 {
                types += (types.isEmpty ? "" : " ") + e
            }
            let bytes = Array(types.utf8.prefix(buf.count - 1))
            buf.copyBytes(from: bytes)
            buf[bytes.count] = 0
        }
        withUnsafeMutableBytes(of: &v.architecture) { buf in
            let bytes = Array(c.architecture.utf8.prefix(buf.count - 1))
            buf.copyBytes(from: bytes)
            buf[bytes.count] = 0
        }
        try writeSized(v, to: info, "bc_model_info")
    }
}

@c @implementation
public func bc_tokenize(_ model: OpaquePointer?, _ text: UnsafePointer<CChar>?, _ textLen: Int, _ addSpecial: Int32,
                        _ parseSpecial: Int32, _ tokens: UnsafeMutablePointer<Int32>?, _ capacity: Int,
                        _ nTokens: UnsafeMutablePointer<Int>?) -> bc_status {
    abiCall {
        let m = try object(model, as: LanguageModel.self, "model")
        let nTokens = try required(nTokens, "n_tokens")
        guard text != nil || textLen == 0 else { throw BatchCoreError.invalid("bc_tokenize: text is NULL") }
        guard textLen >= 0, capacity >= 0 else { throw BatchCoreError.invalid("bc_tokenize: negative size") }
        let ids = text.map { t in
            t.withMemoryRebound(to: UInt8.self, capacity: textLen) {
                m.tokenizer.encode(bytes: UnsafeBufferPointer(start: $0, count: textLen), addSpecial: addSpecial != 0,
                                   parseSpecial: parseSpecial != 0)
            }
        } ?? m.tokenizer.encode("", addSpecial: addSpecial != 0, parseSpecial: parseSpecial != 0)
        if tokens == nil && capacity == 0 { nTokens.pointee = ids.count; return }
        let tokens = try required(tokens, "tokens")
        guard capacity >= ids.count else {
            throw BatchCoreError.invalid("bc_tokenize: capacity \(capacity) < \(ids.count) tokens (query the size first)")
        }
        ids.withUnsafeBufferPointer { tokens.update(from: $0.baseAddress!, count: ids.count) }
        nTokens.pointee = ids.count
    }
}

/// Copies bytes + NUL into a caller buffer, or reports the size when buf is NULL and capacity 0.
func copyOut(_ bytes: [UInt8], _ buf: UnsafeMutablePointer<CChar>?, _ capacity: Int, _ length: UnsafeMutablePointer<Int>,
             _ what: StaticString) throws {
    if buf == nil && capacity == 0 { length.pointee = bytes.count; return }
    let buf = try required(buf, "buf")
    guard capacity >= bytes.count + 1 else {
        throw BatchCoreError.invalid("\(what): capacity \(capacity) < \(bytes.count + 1) bytes (query the size first)")
    }
    bytes.withUnsafeBytes { UnsafeMutableRawPointer(buf).copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
    buf[bytes.count] = 0
    length.pointee = bytes.count
}

@c @implementation
public func bc_detokenize(_ model: OpaquePointer?, _ tokens: UnsafePointer<Int32>?, _ n: Int, _ special: Int32,
                          _ buf: UnsafeMutablePointer<CChar>?, _ capacity: Int, _ length: UnsafeMutablePointer<Int>?) -> bc_status {
    abiCall {
        let m = try object(model, as: LanguageModel.self, "model")
        let length = try required(length, "length")
        guard tokens != nil || n == 0 else { throw BatchCoreError.invalid("bc_detokenize: tokens is NULL") }
        guard n >= 0, capacity >= 0 else { throw BatchCoreError.invalid("bc_detokenize: negative size") }
        let ids = tokens.map { Array(UnsafeBufferPointer(start: $0, count: n)) } ?? []
        try copyOut(try m.tokenizer.decode(ids, special: special != 0), buf, capacity, length, "bc_detokenize")
    }
}

@c @implementation
public func bc_chat_format(_ model: OpaquePointer?, _ roles: UnsafePointer<UnsafePointer<CChar>?>?,
                           _ contents: UnsafePointer<UnsafePointer<CChar>?>?, _ nMessages: Int,
                           _ addGenerationPrompt: Int32, _ buf: UnsafeMutablePointer<CChar>?, _ capacity: Int,
                           _ length: UnsafeMutablePointer<Int>?) -> bc_status {
    abiCall {
        let m = try object(model, as: LanguageModel.self, "model")
        let length = try required(length, "length")
        guard nMessages >= 0, nMessages <= 1 << 20 else { throw BatchCoreError.invalid("bc_chat_format: bad message count") }
        var messages: [(role: String, content: String)] = []
        if nMessages > 0 {
            let roles = try required(roles, "roles"), contents = try required(contents, "contents")
            for i in 0..<nMessages {
                guard let r = roles[i], let c = contents[i] else {
                    throw BatchCoreError.invalid("bc_chat_format: message \(i) has a NULL role or content")
                }
                messages.append((String(cString: r), String(cString: c)))
            }
        }
        let text = try m.tokenizer.applyChatML(messages: messages, addGenerationPrompt: addGenerationPrompt != 0)
        try copyOut(Array(text.utf8), buf, capacity, length, "bc_chat_format")
    }
}
