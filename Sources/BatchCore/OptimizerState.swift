import BCCore
import BCOptim
import CBatchCore

@c @implementation
public func bc_optimizer_save(_ opt: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> bc_status {
    abiCall {
        let o = try object(opt, as: Optimizer.self, "opt")
        let path = try required(path, "path")
        try o.saveState(to: String(cString: path))
    }
}

@c @implementation
public func bc_optimizer_load(_ opt: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> bc_status {
    abiCall {
        let o = try object(opt, as: Optimizer.self, "opt")
        let path = try required(path, "path")
        try o.loadState(from: String(cString: path))
    }
}

@c @implementation
public func bc_optimizer_state_size(_ opt: OpaquePointer?, _ size: UnsafeMutablePointer<Int>?) -> bc_status {
    abiCall {
        let o = try object(opt, as: Optimizer.self, "opt")
        let size = try required(size, "size")
        size.pointee = o.stateSize()
    }
}

@c @implementation
public func bc_optimizer_save_buffer(_ opt: OpaquePointer?, _ buffer: UnsafeMutableRawPointer?, _ capacity: Int,
                                     _ written: UnsafeMutablePointer<Int>?) -> bc_status {
    abiCall {
        let o = try object(opt, as: Optimizer.self, "opt")
        let buffer = try required(buffer, "buffer")
        let needed = o.stateSize()
        guard capacity >= needed else {
            throw BatchCoreError.invalid("bc_optimizer_save_buffer: capacity \(capacity) < state size \(needed)")
        }
        let bytes = o.serializeState()
        bytes.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        put(bytes.count, written)
    }
}

@c @implementation
public func bc_optimizer_load_buffer(_ opt: OpaquePointer?, _ buffer: UnsafeRawPointer?, _ size: Int) -> bc_status {
    abiCall {
        let o = try object(opt, as: Optimizer.self, "opt")
        let buffer = try required(buffer, "buffer")
        guard size > 0 else { throw BatchCoreError.invalid("bc_optimizer_load_buffer: size is 0") }
        try o.loadState(UnsafeRawBufferPointer(start: buffer, count: size))
    }
}
