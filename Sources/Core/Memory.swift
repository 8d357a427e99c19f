#if canImport(Glibc)
import Glibc
#endif

/// Float buffers for weights, optimizer state and KV caches: 64-byte aligned, and
/// buffers of 2 MiB or more are 2 MiB aligned and advised to use transparent huge
/// pages, which removes most TLB misses from streaming kernels (decode reads every
/// weight once per token). Free with `free`.
public enum Memory {
    static let hugePage = 2 << 20

    public static func allocateFloats(_ count: Int, fill value: Float) throws -> UnsafeMutablePointer<Float> {
        let (bytes, overflow) = count.multipliedReportingOverflow(by: 4)
        guard !overflow, count >= 0 else { throw BatchCoreError(.outOfMemory, "cannot allocate \(count) floats") }
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
