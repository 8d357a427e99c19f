import BCCore
#if canImport(Glibc)
import Glibc
#endif
import CBatchCore

/// Thread-local storage for bc_last_error(): one malloc'd C string per thread,
/// replaced on each failure and freed when the thread exits.
enum LastError {
    private static let key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { free($0) }
        return key
    }()

    private static let empty: StaticString = ""

    static func set(_ message: String) {
        let text = message.isEmpty ? "unspecified error" : message
        let old = pthread_getspecific(key)
        pthread_setspecific(key, strdup(text))
        free(old)
    }

    static var current: UnsafePointer<CChar> {
        if let p = pthread_getspecific(key) { return UnsafePointer(p.assumingMemoryBound(to: CChar.self)) }
        return UnsafeRawPointer(empty.utf8Start).assumingMemoryBound(to: CChar.self)
    }
}

extension bc_status {
    init(_ kind: BatchCoreError.Kind) { self.init(rawValue: UInt32(kind.rawValue)) }
}

/// Runs the body of a fallible bc_ function: a thrown error becomes a status code
/// plus a thread-local message; success is BC_OK and leaves the message alone (the
/// header's bc_last_error policy: only failures change it). Every bc_ function that
/// returns a bc_status goes through here, and nothing else sets the message.
@inline(__always)
func abiCall(_ body: () throws -> Void) -> bc_status {
    do {
        try body()
        return BC_OK
    } catch let error as BatchCoreError {
        LastError.set(error.message)
        return bc_status(error.kind)
    } catch {
        LastError.set("internal error: \(error)")
        return BC_E_INTERNAL
    }
}

/// Unwraps a required pointer argument or throws an invalid-argument error naming it.
@inline(__always)
func required<T>(_ pointer: T?, _ name: StaticString, in function: StaticString = #function) throws -> T {
    guard let pointer else { throw BatchCoreError.invalid("\(function.description.prefix { $0 != "(" }): \(name) is NULL") }
    return pointer
}

/// Reads a struct_size-prefixed params struct: defaults overwritten by the first
/// `struct_size` bytes the caller provides (an older caller's shorter struct keeps
/// the defaults for newer fields; fields of a newer caller we do not know are
/// ignored). A NULL pointer means "all defaults". `minimumSize` is the smallest
/// struct_size accepted (a struct whose first fields are all required).
func readParams<T>(_ pointer: UnsafePointer<T>?, defaults: T, _ name: StaticString, minimumSize: Int = 4) throws -> T {
    guard let pointer else { return defaults }
    let size = UnsafeRawPointer(pointer).load(as: UInt32.self)
    guard size >= minimumSize, size <= 1 << 16 else {
        throw BatchCoreError.invalid("\(name).struct_size is \(size) (at least \(minimumSize)); set it with \(name)_default()")
    }
    var value = defaults
    let count = min(Int(size), MemoryLayout<T>.size)
    withUnsafeMutableBytes(of: &value) { dst in
        dst.copyMemory(from: UnsafeRawBufferPointer(start: UnsafeRawPointer(pointer), count: count))
    }
    return value
}

/// A pointer to static C-string storage.
@inline(__always)
func cString(_ s: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self)
}
