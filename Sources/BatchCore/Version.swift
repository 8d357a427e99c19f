import BCCore
import CBatchCore

private let versionString: StaticString = "0.1.0"

@c @implementation
public func bc_version() -> UnsafePointer<CChar>! {
    cString(versionString)
}

@c @implementation
public func bc_abi_version() -> UInt32 {
    BatchCoreVersion.abi
}

@c @implementation
public func bc_status_string(_ status: bc_status) -> UnsafePointer<CChar>! {
    switch status {
    case BC_OK: return cString("ok")
    case BC_E_INVALID_ARGUMENT: return cString("invalid argument")
    case BC_E_IO: return cString("I/O error")
    case BC_E_FORMAT: return cString("bad format")
    case BC_E_UNSUPPORTED: return cString("unsupported")
    case BC_E_OUT_OF_MEMORY: return cString("out of memory")
    case BC_E_KV_FULL: return cString("KV cache full")
    case BC_E_BAD_STATE: return cString("bad state")
    case BC_E_CANCELLED: return cString("cancelled")
    case BC_E_NON_FINITE: return cString("non-finite value")
    case BC_E_NOT_FOUND: return cString("not found")
    case BC_E_INTERNAL: return cString("internal error")
    default: return cString("unknown status")
    }
}

@c @implementation
public func bc_last_error() -> UnsafePointer<CChar>! {
    LastError.current
}
