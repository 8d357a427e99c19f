import BCCore

/// Opaque handles: a retained Swift object behind the C pointer.
@inline(__always)
func retainHandle<T: AnyObject>(_ object: T) -> OpaquePointer {
    OpaquePointer(Unmanaged.passRetained(object).toOpaque())
}

@inline(__always)
func releaseHandle<T: AnyObject>(_ handle: OpaquePointer?, as type: T.Type) {
    guard let handle else { return }
    Unmanaged<T>.fromOpaque(UnsafeRawPointer(handle)).release()
}

/// The object behind a handle, or an invalid-argument error when it is NULL.
@inline(__always)
func object<T: AnyObject>(_ handle: OpaquePointer?, as type: T.Type, _ name: StaticString = "handle",
                          in function: StaticString = #function) throws -> T {
    guard let handle else {
        throw BatchCoreError.invalid("\(function.description.prefix { $0 != "(" }): \(name) is NULL")
    }
    return Unmanaged<T>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
}

/// Writes a value through an optional output pointer.
@inline(__always)
func put<T>(_ value: T, _ pointer: UnsafeMutablePointer<T>?) {
    pointer?.pointee = value
}

/// Writes a struct_size-prefixed output struct, honouring the caller's struct_size:
/// only the bytes the caller's struct holds are written.
func writeSized<T>(_ value: T, to pointer: UnsafeMutablePointer<T>, _ name: StaticString) throws {
    let size = UnsafeRawPointer(pointer).load(as: UInt32.self)
    guard size >= 4, size <= 1 << 16 else {
        throw BatchCoreError.invalid("\(name).struct_size is \(size); set it to sizeof(\(name))")
    }
    var v = value
    let count = min(Int(size), MemoryLayout<T>.size)
    withUnsafeMutableBytes(of: &v) { src in
        // Keep the caller's struct_size as it was.
        src.storeBytes(of: size, as: UInt32.self)
        UnsafeMutableRawPointer(pointer).copyMemory(from: src.baseAddress!, byteCount: count)
    }
}
