/// BPE merge table keyed by the pair of token ids: (left, right) -> (rank, merged id).
/// Open addressing with linear probing; built once, read-only afterwards.
struct MergeTable {
    private var keys: [UInt64]
    private var values: [UInt64]
    private let mask: Int
    private static let empty = UInt64.max

    init(capacityFor n: Int) {
        var cap = 16
        while cap < n * 2 { cap <<= 1 }
        keys = [UInt64](repeating: Self.empty, count: cap)
        values = [UInt64](repeating: 0, count: cap)
        mask = cap - 1
    }

    @inline(__always)
    private static func key(_ left: Int32, _ right: Int32) -> UInt64 {
        (UInt64(UInt32(bitPattern: left)) << 32) | UInt64(UInt32(bitPattern: right))
    }

    @inline(__always)
    private static func slot(_ k: UInt64, _ mask: Int) -> Int {
        Int(truncatingIfNeeded: (k &* 0x9E37_79B9_7F4A_7C15) >> 40) & mask
    }

    /// Inserts unless the pair is present (the first, lowest rank wins).
    mutating func insert(left: Int32, right: Int32, rank: Int32, merged: Int32) {
        let k = Self.key(left, right)
        var i = Self.slot(k, mask)
        while keys[i] != Self.empty {
            if keys[i] == k { return }
            i = (i + 1) & mask
        }
        keys[i] = k
        values[i] = (UInt64(UInt32(bitPattern: rank)) << 32) | UInt64(UInt32(bitPattern: merged))
    }

    /// (rank, merged id) of the pair, or nil.
    @inline(__always)
    func lookup(_ left: Int32, _ right: Int32) -> (rank: Int32, merged: Int32)? {
        let k = Self.key(left, right)
        return keys.withUnsafeBufferPointer { kp in
            var i = Self.slot(k, mask)
            while true {
                let e = kp[i]
                if e == k {
                    let v = values[i]
                    return (Int32(truncatingIfNeeded: v >> 32), Int32(truncatingIfNeeded: v))
                }
                if e == Self.empty { return nil }
                i = (i + 1) & mask
            }
        }
    }
}

/// Scratch space for merging one word; reused across words of one encode call.
struct BPEScratch {
    var ids: [Int32] = []
    var prev: [Int32] = []
    var next: [Int32] = []
    /// Heap of candidate merges, ordered by rank then by left symbol index.
    var heap: [Candidate] = []

    struct Candidate {
        /// rank << 32 | left index: smaller merges first, leftmost first on ties.
        var order: UInt64
        var right: Int32
        var leftID: Int32
        var rightID: Int32
        var merged: Int32
    }

    @inline(__always)
    mutating func push(_ c: Candidate) {
        heap.append(c)
        var i = heap.count - 1
        while i > 0 {
            let p = (i - 1) >> 1
            if heap[p].order <= c.order { break }
            heap[i] = heap[p]
            i = p
        }
        heap[i] = c
    }

    @inline(__always)
    mutating func pop() -> Candidate {
        let top = heap[0]
        let last = heap.removeLast()
        let n = heap.count
        if n > 0 {
            var i = 0
            while true {
                let l = 2 * i + 1
                if l >= n { break }
                var m = l
                if l + 1 < n && heap[l + 1].order < heap[l].order { m = l + 1 }
                if heap[m].order >= last.order { break }
                heap[i] = heap[m]
                i = m
            }
            heap[i] = last
        }
        return top
    }

    /// Merges the symbols `ids` (one per byte of the word) the way llama.cpp does:
    /// repeatedly apply the lowest-ranked merge of adjacent symbols, leftmost first.
    /// Appends the resulting token ids (skipping symbols that are not tokens, -1).
    mutating func merge(_ table: MergeTable, into out: inout [Int32]) {
        let n = ids.count
        if n == 1 {
            if ids[0] >= 0 { out.append(ids[0]) }
            return
        }
        prev.removeAll(keepingCapacity: true)
        next.removeAll(keepingCapacity: true)
        heap.removeAll(keepingCapacity: true)
        for i in 0..<n {
            prev.append(Int32(i - 1))
            next.append(i + 1 < n ? Int32(i + 1) : -1)
        }
        for i in 0..<(n - 1) { consider(table, Int32(i), Int32(i + 1)) }
        while !heap.isEmpty {
            let c = pop()
            let l = Int(c.order & 0xFFFF_FFFF)
            let r = Int(c.right)
            // Stale: a side was merged away (-2) or has grown since the push.
            if ids[l] != c.leftID || ids[r] != c.rightID { continue }
            ids[l] = c.merged
            ids[r] = -2
            let rn = next[r]
            next[l] = rn
            if rn >= 0 { prev[Int(rn)] = Int32(l) }
            if prev[l] >= 0 { consider(table, prev[l], Int32(l)) }
            if rn >= 0 { consider(table, Int32(l), rn) }
        }
        var i: Int32 = 0
        while i >= 0 {
            let id = ids[Int(i)]
            if id >= 0 { out.append(id) }
            i = next[Int(i)]
        }
    }

    @inline(__always)
    private mutating func consider(_ table: MergeTable, _ l: Int32, _ r: Int32) {
        let a = ids[Int(l)], b = ids[Int(r)]
        guard a >= 0, b >= 0, let m = table.lookup(a, b) else { return }
        push(Candidate(order: (UInt64(UInt32(bitPattern: m.rank)) << 32) | UInt64(UInt32(l)),
                       right: r, leftID: a, rightID: b, merged: m.merged))
    }
}
