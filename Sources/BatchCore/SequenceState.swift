import BCCore
import BCModel
import CBatchCore

// Sequence state export/import (see PagedKVCache.saveSequenceState for the format).

@inline(__always)
private func sequenceID(_ seq: Int32) throws -> Int {
    guard seq >= 0 else { throw BatchCoreError.invalid("seq_id must be >= 0 (got \(seq))") }
    return Int(seq)
}

@c @implementation
public func bc_context_seq_state_size(_ ctx: OpaquePointer?, _ seq: Int32, _ size: UnsafeMutablePointer<Int>?) -> bc_status {
    abiCall {
        let c = try object(ctx, as: InferenceContext.self, "ctx")
        let size = try required(size, "size")
        let s = try sequenceID(seq)
        size.pointee = try c.cache.sequenceStateSize(s, model: c.kvFingerprint)
    }
}

@c @implementation
public func bc_context_seq_save_buffer(_ ctx: OpaquePointer?, _ seq: Int32, _ buffer: UnsafeMutableRawPointer?,
                                       _ capacity: Int, _ written: UnsafeMutablePointer<Int>?) -> bc_status {
    abiCall {
        let c = try object(ctx, as: InferenceContext.self, "ctx")
        let buffer = try required(buffer, "buffer")
        let s = try sequenceID(seq)
        let needed = try c.cache.sequenceStateSize(s, model: c.kvFingerprint)
        guard capacity >= needed else {
            throw BatchCoreError.invalid("bc_context_seq_save_buffer: capacity \(capacity) < state size \(needed)")
        }
        let bytes = try c.cache.saveSequenceState(s, model: c.kvFingerprint)
        guard bytes.count <= capacity else {
            throw BatchCoreError(.internal, "bc_context_seq_save_buffer: state of \(bytes.count) bytes, \(needed) predicted")
        }
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        put(bytes.count, written)
    }
}

@c @implementation
public func bc_context_seq_load_buffer(_ ctx: OpaquePointer?, _ seq: Int32, _ buffer: UnsafeRawPointer?, _ size: Int) -> bc_status {
    abiCall {
        let c = try object(ctx, as: InferenceContext.self, "ctx")
        let buffer = try required(buffer, "buffer")
        let s = try sequenceID(seq)
        guard size > 0 else { throw BatchCoreError.invalid("bc_context_seq_load_buffer: size is 0") }
        try c.cache.loadSequenceState(s, from: UnsafeRawBufferPointer(start: buffer, count: size), model: c.kvFingerprint)
    }
}

@c @implementation
public func bc_context_seq_save(_ ctx: OpaquePointer?, _ seq: Int32, _ path: UnsafePointer<CChar>?) -> bc_status {
    abiCall {
        let c = try object(ctx, as: InferenceContext.self, "ctx")
        let path = try required(path, "path")
        let s = try sequenceID(seq)
        try c.cache.saveSequenceState(s, model: c.kvFingerprint, to: String(cString: path))
    }
}

@c @implementation
public func bc_context_seq_load(_ ctx: OpaquePointer?, _ seq: Int32, _ path: UnsafePointer<CChar>?) -> bc_status {
    abiCall {
        let c = try object(ctx, as: InferenceContext.self, "ctx")
        let path = try required(path, "path")
        let s = try sequenceID(seq)
        try c.cache.loadSequenceState(s, model: c.kvFingerprint, from: String(cString: path))
    }
}
