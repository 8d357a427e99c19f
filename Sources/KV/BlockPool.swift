#if canImport(Glibc)
import Glibc
#endif

/// The blocks of one layer group of a paged KV cache (storing layers with the same
/// window share blocks): each block holds, for `blockSize` positions, the keys and
/// values of every layer of the group, `blockBytes` bytes, 64-byte aligned.
///
/// A block id is in exactly one of these states:
/// - used: `refcount > 0` (referenced by that many sequence tables);
/// - cached: unreferenced but named in the prefix index, in the LRU (evictable);
/// - free: unreferenced, unnamed, its memory kept, in `freeList`;
/// - vacant: its memory given back to the budget (`memory` is nil), in `vacant`; a
///   fresh allocation reuses the id.
/// The pool does not know the budget: the cache charges `blockBytes` for every block
/// with memory (`PagedKVCache.allocatedBytes`). Owns the block memory (freed at deinit).
final class BlockPool {
    let window: Int?
    /// The model layers stored in these blocks, in order (index li within the group).
    let layers: [Int]
    let blockBytes: Int
    private(set) var memory: [UnsafeMutableRawPointer?] = []
    private var refcount: [Int32] = []
    private(set) var freeList: [BlockID] = []
    private var vacant: [BlockID] = []
    private var lru = BlockLRU()
    /// Names of full blocks for prefix reuse.
    private(set) var index = PrefixIndex()
    /// Number of used blocks.
    private(set) var usedCount = 0

    init(window: Int?, layers: [Int], blockBytes: Int) {
        self.window = window
        self.layers = layers
        self.blockBytes = blockBytes
    }
    deinit { for m in memory { free(m) } }

    var cachedCount: Int { lru.count }
    var freeCount: Int { freeList.count }

    /// References of a block (0 for a cached, free or vacant one).
    func references(_ b: BlockID) -> Int32 { refcount[Int(b)] }

    /// The memory of a block that has some (used, cached or free).
    @inline(__always)
    func pointer(_ b: BlockID) -> UnsafeMutableRawPointer { memory[Int(b)]! }

    /// One more reference to a used or cached block (a cached one leaves the LRU).
    func incref(_ b: BlockID) {
        if refcount[Int(b)] == 0 {
            lru.remove(b)
            usedCount += 1
        }
        refcount[Int(b)] += 1
    }

    /// One reference less; an unreferenced block becomes cached when `keepNamed` and it
    /// is named, else free (and loses its name).
    func decref(_ b: BlockID, keepNamed: Bool) {
        refcount[Int(b)] -= 1
        guard refcount[Int(b)] == 0 else { return }
        usedCount -= 1
        if keepNamed, index.isNamed(b) {
            lru.append(b)
        } else {
            index.forget(b)
            freeList.append(b)
        }
    }

    /// A free block, now used with one reference; nil when the free list is empty.
    func takeFree() -> BlockID? {
        guard let b = freeList.popLast() else { return nil }
        refcount[Int(b)] = 1
        usedCount += 1
        return b
    }

    /// Moves the least recently used cached block to the free list (its name is
    /// dropped); false when nothing is cached.
    @discardableResult
    func evictOldest() -> Bool {
        guard let b = lru.oldest else { return false }
        lru.remove(b)
        index.forget(b)
        freeList.append(b)
        return true
    }

    /// Gives the memory of the last free-listed block back; returns the bytes freed
    /// (0 when the free list is empty).
    func releaseFree() -> Int {
        guard let b = freeList.popLast() else { return 0 }
        free(memory[Int(b)])
        memory[Int(b)] = nil
        vacant.append(b)
        return blockBytes
    }

    /// Makes `raw` (`blockBytes` bytes, owned by the pool from now on) a used block
    /// with one reference, zero-filled.
    func adopt(_ raw: UnsafeMutableRawPointer) -> BlockID {
        memset(raw, 0, blockBytes)
        usedCount += 1
        if let b = vacant.popLast() {
            memory[Int(b)] = raw
            refcount[Int(b)] = 1
            return b
        }
        memory.append(raw)
        refcount.append(1)
        lru.grow()
        index.grow()
        return BlockID(memory.count - 1)
    }

    /// Names block `b` for prefix reuse (see `PrefixIndex.name`).
    func name(_ b: BlockID, hash: UInt64, tokens: [Int32]) { index.name(b, hash: hash, tokens: tokens) }

    /// Drops block `b`'s name.
    func forgetName(_ b: BlockID) { index.forget(b) }
}
