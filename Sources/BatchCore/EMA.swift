import BCCore
import BCOptim
import CBatchCore

@c @implementation
public func bc_ema_create(_ decay: Double, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> bc_status {
    abiCall {
        let out = try required(out, "out")
        out.pointee = retainHandle(try ParameterEMA(decay: decay))
    }
}

@c @implementation
public func bc_ema_free(_ ema: OpaquePointer?) {
    releaseHandle(ema, as: ParameterEMA.self)
}

@c @implementation
public func bc_ema_add_tensor(_ ema: OpaquePointer?, _ param: UnsafePointer<Float>?, _ count: Int64,
                              _ tensorID: UnsafeMutablePointer<UInt32>?) -> bc_status {
    abiCall {
        let e = try object(ema, as: ParameterEMA.self, "ema")
        let param = try required(param, "param")
        guard count > 0, count <= Int64(Int.max / 8) else {
            throw BatchCoreError.invalid("bc_ema_add_tensor: count must be > 0 (got \(count))")
        }
        put(UInt32(try e.addTensor(param, count: Int(count))), tensorID)
    }
}

@c @implementation
public func bc_ema_update(_ ema: OpaquePointer?, _ kappa: Double) -> bc_status {
    abiCall { try object(ema, as: ParameterEMA.self, "ema").update(kappa: kappa) }
}

@c @implementation
public func bc_ema_copy(_ ema: OpaquePointer?, _ tensorID: UInt32, _ dst: UnsafeMutablePointer<Float>?,
                        _ count: Int64) -> bc_status {
    abiCall {
        let e = try object(ema, as: ParameterEMA.self, "ema")
        let dst = try required(dst, "dst")
        guard count > 0, count <= Int64(Int.max / 8) else { throw BatchCoreError.invalid("bc_ema_copy: count must be > 0") }
        try e.copyShadow(Int(tensorID), to: dst, count: Int(count))
    }
}
