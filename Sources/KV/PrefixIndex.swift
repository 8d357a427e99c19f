/// The prefix index of one layer group's pool ("automatic prefix caching"): a full
/// block is named by a hash chained over (parent block's hash, its tokens, adapter id);
/// `lookup` finds the block holding a name. Each block has at most one name; a name
/// points to at most one block (the first one named).
struct PrefixIndex {
    private var byHash: [UInt64: BlockID] = [:]
    /// Per block id: its name and tokens, or nil.
    private var names: [(hash: UInt64, tokens: [Int32])?] = []

    /// FNV-1a-style 64-bit chained hash of a full block (parent hash, tokens, adapter).
    static func blockHash(parent: UInt64, tokens: [Int32], adapter: UInt64) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325 ^ parent
        func mix(_ v: UInt64) {
            var x = v
            for _ in 0..<8 { h = (h ^ (x & 0xFF)) &* 0x0000_0100_0000_01B3; x >>= 8 }
        }
        mix(adapter)
        for t in tokens { mix(UInt64(UInt32(bitPattern: t))) }
        return h
    }

    /// Makes room for block id `names.count`.
    mutating func grow() { names.append(nil) }

    /// Whether block `b` carries a name.
    func isNamed(_ b: BlockID) -> Bool { names[Int(b)] != nil }

    /// The block named `hash` holding exactly `tokens` (a hash collision is a miss).
    func lookup(_ hash: UInt64, tokens: [Int32]) -> BlockID? {
        guard let b = byHash[hash], let name = names[Int(b)], name.tokens == tokens else { return nil }
        return b
    }

    /// Names block `b` unless it or the name is taken already.
    mutating func name(_ b: BlockID, hash: UInt64, tokens: [Int32]) {
        guard names[Int(b)] == nil, byHash[hash] == nil else { return }
        names[Int(b)] = (hash, tokens)
        byHash[hash] = b
    }

    /// Drops block `b`'s name (its contents are about to change or it is recycled).
    mutating func forget(_ b: BlockID) {
        guard let name = names[Int(b)] else { return }
        if byHash[name.hash] == b { byHash[name.hash] = nil }
        names[Int(b)] = nil
    }
}
