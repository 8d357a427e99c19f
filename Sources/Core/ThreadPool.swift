import CSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A fixed pool of worker threads for short data-parallel loops (one decode step
/// calls it ~120 times). Workers spin briefly on an atomic generation counter after
/// each job before going to sleep, so back-to-back jobs start in nanoseconds instead
/// of the tens of microseconds a wake-up from sleep costs. The calling thread takes
/// part in every job. One job at a time (callers serialize: batchcore handles are
/// used by one thread at a time, and the pool is guarded by a lock).
final class ThreadPool: @unchecked Sendable {
    let workerCount: Int
    private let stopping = Atomic<Bool>(false)
    private let generation = Atomic<Int>(0)
    private let nextItem = Atomic<Int>(0)
    private let finished = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let inside = Atomic<Int>(0)
    private var job: ((Int) -> Void)?
    private var itemCount = 0
    // pthread objects must not move: heap-allocated, never freed (the pool lives as
    // long as its workers, and a stopped pool's workers may still be leaving).
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private let submit = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var threads: [pthread_t] = []
    /// Spin iterations (each a pause instruction, ~10-40 ns) before a worker sleeps.
    static let spinLimit = 20_000

    init(workers: Int) {
        workerCount = max(0, workers)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
        pthread_mutex_init(submit, nil)
        for _ in 0..<workerCount {
            var t = pthread_t()
            let box = Unmanaged.passRetained(self).toOpaque()
            pthread_create(&t, nil, { arg in
                let pool = Unmanaged<ThreadPool>.fromOpaque(arg!).takeRetainedValue()
                pool.workerLoop()
                return nil
            }, box)
            pthread_detach(t)
            threads.append(t)
        }
    }

    /// Makes the workers exit (after any running job); the pool is then unusable.
    func stop() {
        pthread_mutex_lock(submit)
        stopping.store(true, ordering: .releasing)
        generation.add(1, ordering: .releasing)
        pthread_mutex_lock(mutex)
        pthread_cond_broadcast(wake)
        pthread_mutex_unlock(mutex)
        pthread_mutex_unlock(submit)
    }

    /// Runs body(0..<count) on the caller and the workers; returns when all are done.
    ///
    /// The job closure is published under `mutex`; a worker takes a copy under the
    /// same lock and counts itself `inside` until it has dropped that copy. The caller
    /// withdraws the job and waits for `inside` to reach zero before leaving, so no
    /// reference to the (non-escaping) body outlives this call.
    func run(_ count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        if workerCount == 0 || count == 1 {
            for i in 0..<count { body(i) }
            return
        }
        pthread_mutex_lock(submit)
        defer { pthread_mutex_unlock(submit) }
        withoutActuallyEscaping(body) { escapable in
            pthread_mutex_lock(mutex)
            job = escapable
            itemCount = count
            nextItem.store(0, ordering: .relaxed)
            finished.store(0, ordering: .relaxed)
            generation.add(1, ordering: .releasing)
            if sleepers.load(ordering: .acquiring) > 0 { pthread_cond_broadcast(wake) }
            pthread_mutex_unlock(mutex)
            Self.work(escapable, count, nextItem, finished)
            while finished.load(ordering: .acquiring) < count { spinPause() }
            pthread_mutex_lock(mutex)
            job = nil
            pthread_mutex_unlock(mutex)
            while inside.load(ordering: .acquiring) > 0 { spinPause() }
        }
    }

    private static func work(_ job: (Int) -> Void, _ count: Int, _ nextItem: borrowing Atomic<Int>,
                             _ finished: borrowing Atomic<Int>) {
        while true {
            let i = nextItem.add(1, ordering: .relaxed).oldValue
            if i >= count { break }
            job(i)
            finished.add(1, ordering: .releasing)
        }
    }

    /// Takes the current job (if any) under the lock and runs it; returns once the
    /// worker holds no reference to it.
    private func joinCurrentJob(_ seen: inout Int) -> Bool {
        pthread_mutex_lock(mutex)
        seen = generation.load(ordering: .acquiring)
        let current = job
        let count = itemCount
        if current != nil { inside.add(1, ordering: .relaxed) }
        pthread_mutex_unlock(mutex)
        guard let current else { return false }
        Self.work(current, count, nextItem, finished)
        return true
    }

    private func workerLoop() {
        var seen = generation.load(ordering: .acquiring)
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins < Self.spinLimit { spinPause(); continue }
                pthread_mutex_lock(mutex)
                sleepers.add(1, ordering: .releasing)
                while generation.load(ordering: .acquiring) == seen { pthread_cond_wait(wake, mutex) }
                sleepers.subtract(1, ordering: .releasing)
                pthread_mutex_unlock(mutex)
            }
            if stopping.load(ordering: .acquiring) { return }
            // Once joinCurrentJob returns, its copy of the job is released.
            if joinCurrentJob(&seen) { inside.subtract(1, ordering: .releasing) }
        }
    }
}

@inline(__always) func spinPause() { bc_internal_spin_pause() }
