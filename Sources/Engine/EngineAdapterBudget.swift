import BCCore
import BCModel

/// An engine's adapter memory budget (`EngineOptions.adapterBytes`, 0 = unlimited):
/// the engine tracks the adapters its requests use (weakly: freeing the last handle
/// still frees the adapter) and, before each step, makes the step's adapters resident.
/// When an adapter must be read again and the resident bytes of the tracked adapters
/// would pass the budget — and after each step's loads and after its forward, to trim
/// back to it — the
/// least-recently-used tracked adapter that no running request uses (no sample holding
/// KV, no row in the step) releases its weights (`ServingAdapter.evict`); it is read
/// again when a request needs it. Only adapters in use may carry the resident bytes
/// past the budget: resident ≤ max(budget, bytes of the adapters in use).
final class AdapterResidency {
    private struct Entry {
        weak var adapter: ServingAdapter?
        var lastUse: Int
    }

    /// Bytes; 0 = unlimited.
    let budget: Int
    private var entries: [ObjectIdentifier: Entry] = [:]
    private var clock = 0
    /// Weight reads this engine made (reloads after an eviction).
    private(set) var loads = 0
    /// Adapters this engine released.
    private(set) var evictions = 0

    init(budget: Int) { self.budget = budget }

    /// At submit: refuses an adapter larger than the whole budget (it could never be
    /// resident within it); else starts tracking it.
    func admit(_ a: ServingAdapter) throws {
        if budget > 0 && a.bytes > budget {
            throw BatchCoreError.invalid("the adapter needs \(a.bytes) bytes; the engine's adapter budget is \(budget) bytes")
        }
        track(a)
    }

    private func track(_ a: ServingAdapter) {
        let k = ObjectIdentifier(a)
        if entries[k]?.adapter !== a { entries[k] = Entry(adapter: a, lastUse: 0) }
    }

    /// Resident bytes of the tracked adapters still alive.
    var residentBytes: Int {
        entries.values.reduce(0) { sum, e in
            guard let a = e.adapter, a.isResident else { return sum }
            return sum + a.bytes
        }
    }

    /// Marks `needed` (the step's adapters, in row order) used now and makes each
    /// resident, first releasing LRU adapters outside `pinned` (the adapters of running
    /// requests, `needed` included) to fit the budget. Returns the adapters whose
    /// weights could not be read, with the error; the others are resident.
    func prepare(_ needed: [ServingAdapter], pinned: Set<ObjectIdentifier>) -> [ObjectIdentifier: Error] {
        entries = entries.filter { $0.value.adapter != nil }
        var seen: Set<ObjectIdentifier> = []
        var order: [ServingAdapter] = []
        for a in needed where seen.insert(ObjectIdentifier(a)).inserted {
            track(a)
            clock += 1
            entries[ObjectIdentifier(a)]?.lastUse = clock
            order.append(a)
        }
        var failed: [ObjectIdentifier: Error] = [:]
        for a in order where !a.isResident {
            makeRoom(a.bytes, pinned: pinned.union(seen))
            do {
                _ = try a.weights()
                loads += 1
            } catch {
                failed[ObjectIdentifier(a)] = error
            }
        }
        makeRoom(0, pinned: pinned.union(seen))
        return failed
    }

    /// Releases LRU adapters outside `pinned` until the resident bytes fit the budget
    /// (after a step: the adapters of requests that finished are idle).
    func trim(pinned: Set<ObjectIdentifier>) {
        entries = entries.filter { $0.value.adapter != nil }
        makeRoom(0, pinned: pinned)
    }

    /// Releases LRU unpinned resident adapters until `extra` more bytes fit the budget
    /// (or none is left to release).
    private func makeRoom(_ extra: Int, pinned: Set<ObjectIdentifier>) {
        guard budget > 0 else { return }
        var tried: Set<ObjectIdentifier> = []
        while residentBytes + extra > budget {
            let victim = entries.filter { k, e in
                guard let a = e.adapter else { return false }
                return !pinned.contains(k) && !tried.contains(k) && a.isEvictable && a.isResident
            }.min { $0.value.lastUse < $1.value.lastUse }
            guard let (k, e) = victim, let a = e.adapter else { return }
            tried.insert(k)
            if a.evict() { evictions += 1 }
        }
    }
}
