import COpenBLAS
import Dispatch

#if canImport(Glibc)
import Glibc
#endif

/// The one thread-count setting of the library: it governs batchcore's own worker
/// threads and OpenBLAS together, so the two never oversubscribe the cores.
public enum Parallel {
    nonisolated(unsafe) private static var configured = 0

    /// Number of online CPU cores.
    public static var coreCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// Threads batchcore uses: the configured count, or all cores.
    public static var threadCount: Int { configured > 0 ? configured : coreCount }

    /// Sets the thread count (0 = all cores) for batchcore and OpenBLAS.
    public static func setThreadCount(_ n: Int) throws {
        guard n >= 0, n <= 4096 else { throw BatchCoreError.invalid("thread count \(n) out of range 0...4096") }
        configured = n
        openblas_set_num_threads(Int32(threadCount))
    }

    /// Runs `body(i)` for i in 0..<count on up to `threadCount` threads. Work items are
    /// handed out in order, so each item must be independent of the others.
    public static func forEach(_ count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        let threads = min(threadCount, count)
        if threads == 1 {
            for i in 0..<count { body(i) }
            return
        }
        withoutActuallyEscaping(body) { body in
            DispatchQueue.concurrentPerform(iterations: count) { body($0) }
        }
    }
}
