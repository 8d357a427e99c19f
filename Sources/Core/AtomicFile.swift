#if canImport(Glibc)
import Glibc
#endif

/// Writes a file whole or not at all: `body` streams the bytes into `<path>.tmp<pid>`
/// (the pid keeps two processes saving the same path apart), which is fsynced and
/// renamed over `path`; on any failure the temporary file is removed and `path` is
/// untouched.
package func writeAtomically(_ path: String, _ body: ((UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws {
    let tmp = path + ".tmp\(getpid())"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw BatchCoreError.io("cannot create \(tmp): \(String(cString: strerror(errno)))") }
    var closed = false
    defer { if !closed { close(fd); unlink(tmp) } }
    try body { chunk in
        var done = 0
        while done < chunk.count {
            let n = Glibc.write(fd, chunk.baseAddress! + done, chunk.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw BatchCoreError.io("cannot write \(tmp): \(String(cString: strerror(errno)))")
            }
            done += n
        }
    }
    guard fsync(fd) == 0 else { throw BatchCoreError.io("cannot sync \(tmp): \(String(cString: strerror(errno)))") }
    closed = true
    guard close(fd) == 0 else {
        unlink(tmp)
        throw BatchCoreError.io("cannot close \(tmp): \(String(cString: strerror(errno)))")
    }
    guard rename(tmp, path) == 0 else {
        let message = String(cString: strerror(errno))
        unlink(tmp)
        throw BatchCoreError.io("cannot rename \(tmp) to \(path): \(message)")
    }
}

/// Writes `bytes` atomically (see above).
package func writeAtomically(_ path: String, bytes: [UInt8]) throws {
    try writeAtomically(path) { sink in try bytes.withUnsafeBytes { try sink($0) } }
}

/// Writes a text file atomically.
package func writeTextFile(_ path: String, _ text: String) throws {
    var t = text
    try writeAtomically(path) { sink in try t.withUTF8 { try sink(UnsafeRawBufferPointer($0)) } }
}

/// Reads a whole regular file of at most `limit` bytes; a larger one is rejected
/// unread with `.format("<path>: <size> bytes is larger than <what>")`.
package func readWholeFile(_ path: String, limit: Int, larger what: String) throws -> [UInt8] {
    guard let f = fopen(path, "rb") else { throw BatchCoreError.io("cannot open \(path): \(String(cString: strerror(errno)))") }
    defer { fclose(f) }
    var info = stat()
    guard fstat(fileno(f), &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
        throw BatchCoreError.io("\(path) is not a regular file")
    }
    let size = Int(info.st_size)
    guard size <= limit else { throw BatchCoreError.format("\(path): \(size) bytes is larger than \(what)") }
    var bytes = [UInt8](repeating: 0, count: size)
    let read = bytes.withUnsafeMutableBytes { fread($0.baseAddress, 1, size, f) }
    guard read == size else { throw BatchCoreError.io("cannot read \(path)") }
    return bytes
}
