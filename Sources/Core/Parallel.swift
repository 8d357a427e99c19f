import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The one thread-count setting of the library: the size of batchcore's worker pool
/// (the calling thread plus threadCount - 1 workers).
package enum Parallel {
    /// The configured thread count (0 = all cores).
    private static let configured = Atomic<Int>(0)
    /// The worker pool, created on first use and replaced when the thread count changes.
    private static let pool = Mutex<ThreadPool?>(nil)

    /// The worker pool sized for the current thread count (created on first use).
    private static func currentPool() -> ThreadPool {
        pool.withLock { pool in
            if let pool { return pool }
            let p = ThreadPool(workers: threadCount - 1)
            pool = p
            return p
        }
    }

    /// Number of online CPU cores.
    package static var coreCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// Threads batchcore uses: the configured count, or all cores.
    package static var threadCount: Int {
        let n = configured.load(ordering: .relaxed)
        return n > 0 ? n : coreCount
    }

    /// Sets the thread count (0 = all cores).
    package static func setThreadCount(_ n: Int) throws {
        guard n >= 0, n <= 4096 else { throw BatchCoreError.invalid("thread count \(n) out of range 0...4096") }
        configured.store(n, ordering: .relaxed)
        pool.withLock { pool in
            // Workers of a replaced pool go to sleep for good; they hold no resources beyond their stacks.
            if let p = pool, p.workerCount != threadCount - 1 {
                p.stop()
                pool = nil
            }
        }
    }

    /// Runs `body(i)` for i in 0..<count on up to `threadCount` threads. Work items are
    /// handed out in order, so each item must be independent of the others.
    package static func forEach(_ count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        let threads = min(threadCount, count)
        if threads == 1 {
            for i in 0..<count { body(i) }
            return
        }
        currentPool().run(count, body)
    }
}
