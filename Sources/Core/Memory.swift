#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// Float buffers for weights, optimizer state and KV caches: 64-byte aligned, and
/// buffers of 2 MiB or more are 2 MiB aligned and advised to use transparent huge
/// pages, which removes most TLB misses from streaming kernels (decode reads every
/// weight once per token). Free with `free`.
package enum Memory {
    static let hugePage = 2 << 20

    /// Fault injection for tests: while `withFailingAllocations(fail) { ... }` runs on a
    /// thread, every allocation made on that thread of `bytes` for which `fail` returns
    /// true fails as if the host were out of memory. Other threads (other tests, the
    /// worker pool) are not affected; production code never installs one.
    private static let faults = Mutex<[UInt: @Sendable (Int) -> Bool]>([:])
    private static let faultsInstalled = Atomic<Int>(0)

    package static func withFailingAllocations<R>(_ fail: @escaping @Sendable (Int) -> Bool, _ body: () throws -> R) rethrows -> R {
        let thread = UInt(pthread_self())
        faults.withLock { $0[thread] = fail }
        faultsInstalled.add(1, ordering: .sequentiallyConsistent)
        defer {
            faults.withLock { $0[thread] = nil }
            faultsInstalled.subtract(1, ordering: .sequentiallyConsistent)
        }
        return try body()
    }

    /// Whether an allocation of `bytes` on this thread must fail by fault injection.
    @inline(__always)
    package static func injectedFailure(_ bytes: Int) -> Bool {
        guard faultsInstalled.load(ordering: .relaxed) > 0 else { return false }
        let thread = UInt(pthread_self())
        guard let fail = faults.withLock({ $0[thread] }) else { return false }
        return fail(bytes)
    }

    package static func allocateFloats(_ count: Int, fill value: Float) throws -> UnsafeMutablePointer<Float> {
        let (bytes, overflow) = count.multipliedReportingOverflow(by: 4)
        guard !overflow, count >= 0, !injectedFailure(bytes) else { throw BatchCoreError(.outOfMemory, "cannot allocate \(count) floats") }
        let huge = bytes >= hugePage
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, huge ? hugePage : 64, max(bytes, 64)) == 0, let raw else {
            throw BatchCoreError(.outOfMemory, "cannot allocate \(bytes) bytes")
        }
        if huge { _ = madvise(raw, (bytes + hugePage - 1) / hugePage * hugePage, MADV_HUGEPAGE) }
        let p = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        p.initialize(repeating: value, count: count)
        return p
    }
}
