/// Index of a block within its layer group's pool (stable for the pool's lifetime).
typealias BlockID = Int32

/// The least-recently-used order of a pool's cached blocks (unreferenced, still named
/// in the prefix index): an intrusive doubly linked list over block ids, so insert,
/// remove and "oldest" are O(1). `grow()` adds the links of one more block id.
struct BlockLRU {
    private var prev: [BlockID?] = [], next: [BlockID?] = []
    /// The least recently released cached block (evicted first).
    private(set) var oldest: BlockID?
    private var newest: BlockID?
    /// Number of blocks in the list.
    private(set) var count = 0

    /// Makes room for the links of block id `prev.count`.
    mutating func grow() {
        prev.append(nil)
        next.append(nil)
    }

    /// Appends `b` as the most recently used block; `b` must not be in the list.
    mutating func append(_ b: BlockID) {
        prev[Int(b)] = newest
        next[Int(b)] = nil
        if let t = newest { next[Int(t)] = b } else { oldest = b }
        newest = b
        count += 1
    }

    /// Removes `b`, which must be in the list.
    mutating func remove(_ b: BlockID) {
        let p = prev[Int(b)], n = next[Int(b)]
        if let p { next[Int(p)] = n } else { oldest = n }
        if let n { prev[Int(n)] = p } else { newest = p }
        prev[Int(b)] = nil
        next[Int(b)] = nil
        count -= 1
    }
}
