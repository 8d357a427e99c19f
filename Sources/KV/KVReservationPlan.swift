import BCCore
#if canImport(Glibc)
import Glibc
#endif

/// What `PagedKVCache.reserve` will do for a batch, planned completely before anything
/// changes: every block each sequence gets (appended, copied on write from a shared
/// block, or replacing one a sliding window released) and where it comes from (the
/// group's free list, an evicted cached block, or fresh memory from the budget), every
/// release of free or cached blocks' memory to make budget room (for other groups'
/// blocks or KIVI residual rows), every residual growth, and the dequantization scratch
/// the step's gathers need. `PagedKVCache.plan` simulates the pools' counts exactly as
/// the execution then changes them, so a plan that exists always executes; only host
/// allocations can still fail, and they are made before the first change.
struct KVReservationPlan {
    /// Where a new block comes from.
    enum Source {
        case freeList
        /// The group's least recently used cached block (its name is dropped).
        case evictCached
        /// New memory charged to the budget.
        case fresh
    }

    enum Step {
        /// Gives back the memory of one free-listed block of the group.
        case releaseFree(group: Int)
        /// Evicts the group's least recently used cached block and gives back its memory.
        case evictAndRelease(group: Int)
        /// A block for `index` in the sequence's table of the group: appended when the
        /// table is that long, else replacing the entry (a shared block is copied first).
        case block(sequence: Int, group: Int, index: Int, source: Source)
        /// Grows the sequence's KIVI residual to `rows` rows.
        case residual(sequence: Int, rows: Int)
    }

    /// (sequence, length) of the batch, one per sequence, in sequence order.
    var growth: [(sequence: Int, length: Int)] = []
    /// Sequences the reservation creates (empty, before any step).
    var created: [Int] = []
    var steps: [Step] = []
    /// Fresh blocks per group (allocated before the steps run).
    var freshBlocks: [Int]
    /// Floats of dequantization scratch the batch's gathers need (0 for f32 storage).
    var scratchFloats = 0

    init(groups: Int) { freshBlocks = Array(repeating: 0, count: groups) }
}

extension PagedKVCache {
    /// Plans `reserve(growth)` without changing anything; throws `.kvFull` when the
    /// batch does not fit (and `.invalid` for a negative length). `onEmptyCache` plans
    /// against an empty cache of the same shape and budget instead of the current state
    /// (no sequences, no free or cached blocks, the whole budget as headroom): whether
    /// the batch could ever fit with nothing else held.
    func plan(_ growth: [KVGrowth], onEmptyCache: Bool = false) throws -> KVReservationPlan {
        var want: [Int: Int] = [:]
        for item in growth {
            guard item.length >= 0 else { throw BatchCoreError.invalid("sequence \(item.sequence): length \(item.length) < 0") }
            guard item.length <= maxLength else {
                throw BatchCoreError(.kvFull, "sequence \(item.sequence) would reach \(item.length) positions; the limit is \(maxLength)")
            }
            want[item.sequence] = max(want[item.sequence] ?? 0, item.length)
        }
        let bs = layout.blockSize
        var plan = KVReservationPlan(groups: pools.count)
        plan.growth = want.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        // The simulated pools: free and cached counts, budget headroom, and reference
        // changes of shared blocks copied so far.
        var free = pools.map { onEmptyCache ? 0 : $0.freeCount }, cached = pools.map { onEmptyCache ? 0 : $0.cachedCount }
        var headroom = onEmptyCache ? budgetBytes : budgetBytes - allocatedBytes
        var copied: [[BlockID: Int32]] = Array(repeating: [:], count: pools.count)

        /// Releases free-listed, then cached blocks' memory until `bytes` fit.
        func makeRoom(_ bytes: Int) -> Bool {
            for o in pools.indices {
                while headroom < bytes, free[o] > 0 {
                    free[o] -= 1
                    headroom += pools[o].blockBytes
                    plan.steps.append(.releaseFree(group: o))
                }
            }
            for o in pools.indices {
                while headroom < bytes, cached[o] > 0 {
                    cached[o] -= 1
                    headroom += pools[o].blockBytes
                    plan.steps.append(.evictAndRelease(group: o))
                }
            }
            return headroom >= bytes
        }
        func full(_ s: Int, _ what: String) -> BatchCoreError {
            BatchCoreError(.kvFull, "KV cache full: sequence \(s) needs \(what); budget \(budgetBytes) bytes, \(allocatedBytes) allocated")
        }

        for (s, length) in plan.growth {
            let seq = onEmptyCache ? nil : sequences[s]
            if seq == nil { plan.created.append(s) }
            if layout.storage != .f32 {
                plan.scratchFloats = max(plan.scratchFloats, (length + bs - 1) / bs * bs * kvDim * 2)
            }
            let oldLength = seq?.length ?? 0
            guard length > oldLength else { continue }
            let firstBlock = oldLength / bs, lastBlock = (length - 1) / bs
            for (g, pool) in pools.enumerated() {
                let table = seq?.tables[g] ?? []
                var count = table.count
                for bi in firstBlock...lastBlock {
                    if bi < count, bi < table.count, let b = table[bi] {
                        // Written in place unless shared: then copied on write.
                        let refs = pool.references(b) + (copied[g][b] ?? 0)
                        guard refs > 1 else { continue }
                        copied[g][b, default: 0] -= 1
                    }
                    let source: KVReservationPlan.Source
                    if free[g] > 0 {
                        free[g] -= 1
                        source = .freeList
                    } else if headroom >= pool.blockBytes {
                        headroom -= pool.blockBytes
                        source = .fresh
                    } else if cached[g] > 0 {
                        cached[g] -= 1
                        source = .evictCached
                    } else if makeRoom(pool.blockBytes) {
                        headroom -= pool.blockBytes
                        source = .fresh
                    } else {
                        throw full(s, "more blocks of layer group \(g) (up to position \(length))")
                    }
                    if source == .fresh { plan.freshBlocks[g] += 1 }
                    plan.steps.append(.block(sequence: s, group: g, index: bi, source: source))
                    if bi >= count { count += 1 }
                }
            }
            if kivi {
                let capacity = seq?.residual.capacity ?? 0
                let rows = length - (seq?.quantizedBlocks ?? 0) * bs
                if rows > capacity {
                    let newRows = (rows + bs - 1) / bs * bs
                    let bytes = (newRows - capacity) * residualRowBytes
                    guard headroom >= bytes || makeRoom(bytes) else {
                        throw full(s, "\(bytes) more bytes of KIVI residual")
                    }
                    headroom -= bytes
                    plan.steps.append(.residual(sequence: s, rows: newRows))
                }
            }
        }
        return plan
    }

    /// Runs a plan made on the current state: host allocations first (on failure they
    /// are undone and `.outOfMemory` thrown, nothing changed), then the steps, which
    /// cannot fail.
    func execute(_ plan: KVReservationPlan) throws {
        // 1. Every host allocation.
        var fresh: [[UnsafeMutableRawPointer]] = Array(repeating: [], count: pools.count)
        var residuals: [Int: [UnsafeMutablePointer<Float>?]] = [:]
        var newScratch: UnsafeMutablePointer<Float>?
        do {
            for (g, n) in plan.freshBlocks.enumerated() {
                for _ in 0..<n {
                    var raw: UnsafeMutableRawPointer?
                    guard !Memory.injectedFailure(pools[g].blockBytes), posix_memalign(&raw, 64, pools[g].blockBytes) == 0, let raw else {
                        throw BatchCoreError(.outOfMemory, "cannot allocate a KV block of \(pools[g].blockBytes) bytes")
                    }
                    fresh[g].append(raw)
                }
            }
            for (i, step) in plan.steps.enumerated() {
                if case .residual(_, let rows) = step {
                    residuals[i] = try KIVIResidual.allocate(rows: rows, layersPerGroup: layersPerGroup, kvDim: kvDim)
                }
            }
            if plan.scratchFloats > scratchCount {
                newScratch = try Memory.allocateFloats(plan.scratchFloats, fill: 0)
            }
        } catch {
            for list in fresh { for p in list { free(p) } }
            for list in residuals.values { for p in list { free(p) } }
            throw error
        }
        // 2. The changes.
        if let newScratch {
            free(scratch)
            scratch = newScratch
            scratchCount = plan.scratchFloats
        }
        for s in plan.created { sequences[s] = KVSequence(layersPerGroup: layersPerGroup, kvDim: kvDim) }
        let bs = layout.blockSize
        for (i, step) in plan.steps.enumerated() {
            switch step {
            case .releaseFree(let g):
                allocatedBytes -= pools[g].releaseFree()
            case .evictAndRelease(let g):
                pools[g].evictOldest()
                allocatedBytes -= pools[g].releaseFree()
            case .block(let s, let g, let bi, let source):
                guard let seq = sequences[s] else { continue }
                let pool = pools[g]
                var taken: BlockID?
                switch source {
                case .freeList:
                    taken = pool.takeFree()
                case .evictCached:
                    pool.evictOldest()
                    taken = pool.takeFree()
                case .fresh:
                    if let raw = fresh[g].popLast() {
                        taken = pool.adopt(raw)
                        allocatedBytes += pool.blockBytes
                    }
                }
                // The plan counted exactly these blocks.
                guard let b = taken else { preconditionFailure("KV reservation plan out of step with the pool") }
                if bi < seq.tables[g].count {
                    if let old = seq.tables[g][bi] {
                        memcpy(pool.pointer(b), pool.pointer(old), pool.blockBytes)
                        pool.decref(old, keepNamed: prefixCachingEnabled)
                    }
                    seq.tables[g][bi] = b
                } else {
                    seq.tables[g].append(b)
                }
            case .residual(let s, let rows):
                guard let seq = sequences[s], let buffers = residuals.removeValue(forKey: i) else { continue }
                let delta = (rows - seq.residual.capacity) * residualRowBytes
                seq.residual.install(buffers, rows: rows, keep: seq.reserved - seq.quantizedBlocks * bs)
                allocatedBytes += delta
                residualBytes += delta
            }
        }
        for (s, length) in plan.growth {
            if let seq = sequences[s] { seq.reserved = max(seq.reserved, length) }
        }
    }
}
