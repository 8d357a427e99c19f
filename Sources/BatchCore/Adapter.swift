import BCCore
import BCModel
import CBatchCore

@c @implementation
public func bc_adapter_load(_ model: OpaquePointer?, _ dir: UnsafePointer<CChar>?,
                            _ out: UnsafeMutablePointer<OpaquePointer?>?) -> bc_status {
    abiCall {
        let m = try object(model, as: LanguageModel.self, "model")
        let dir = try required(dir, "dir")
        let out = try required(out, "out")
        out.pointee = retainHandle(try ServingAdapter(directory: String(cString: dir), model: m))
    }
}

@c @implementation
public func bc_adapter_free(_ adapter: OpaquePointer?) {
    releaseHandle(adapter, as: ServingAdapter.self)
}

@c @implementation
public func bc_context_set_adapter(_ ctx: OpaquePointer?, _ seq: Int32, _ adapter: OpaquePointer?, _ scale: Float) -> bc_status {
    abiCall {
        let c = try object(ctx, as: InferenceContext.self, "ctx")
        let a = adapter.map { Unmanaged<ServingAdapter>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
        try c.setAdapter(sequence: Int(seq), a, scale: scale)
    }
}
