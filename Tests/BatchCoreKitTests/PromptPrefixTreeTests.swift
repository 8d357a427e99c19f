import BCEngine
import Testing

/// The offline mode's prefix tree (`PromptPrefixTree`) against brute force on random
/// prompts with planted shared prefixes (nested sub-prefixes, prompts that are exactly
/// a shared prefix, duplicates, the same tokens under another adapter, singles).
@Suite struct PromptPrefixTreeTests {
    typealias Prompt = (adapter: UInt64, tokens: [Int32])

    /// Longest common prefix; 0 across adapters (the prefix cache never shares them).
    static func lcp(_ a: Prompt, _ b: Prompt) -> Int {
        guard a.adapter == b.adapter else { return 0 }
        var l = 0
        while l < min(a.tokens.count, b.tokens.count) && a.tokens[l] == b.tokens[l] { l += 1 }
        return l
    }

    /// Prompt tokens a prefix cache could serve within `set`: Σ lengths − distinct non-empty prefixes.
    static func savings(_ set: [Prompt]) -> Int {
        var distinct = Set<[Int32]>()
        for p in set { for k in 1...p.tokens.count { distinct.insert(Array(p.tokens[0..<k])) } }
        return set.map(\.tokens.count).reduce(0, +) - distinct.count
    }

    static func workload(_ rng: inout SplitMix64) -> [Prompt] {
        func below(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        func random(_ count: Int) -> [Int32] { (0..<count).map { _ in Int32(below(6)) } }  // a small alphabet: chance sharing
        var prompts: [Prompt] = []
        let groups = 2 + below(5)
        for g in 0..<groups {
            // A distinct first token per planted group: groups share nothing with each other.
            let prefix = [Int32(1000 + g)] + random(1 + below(60))
            let adapter: UInt64 = below(3) == 0 ? 7 : 0
            let sub = random(1 + below(30))
            for m in 0..<(2 + below(7)) {
                var tokens = prefix
                if m % 3 == 1 { tokens += sub }
                tokens += random(below(12))  // 0: the prompt is the shared prefix itself
                prompts.append((adapter, tokens))
                if below(8) == 0 { prompts.append((adapter, tokens)) }  // a duplicate
            }
            if below(3) == 0 { prompts.append((adapter ^ 0x55, prefix + random(3))) }  // same tokens, other adapter
        }
        for k in 0..<below(6) { prompts.append((0, [Int32(5000 + k)] + random(below(20)))) }
        for i in stride(from: prompts.count - 1, to: 0, by: -1) { prompts.swapAt(i, below(i + 1)) }
        return prompts
    }

    @Test func orderGroupsSharedPrefixesLargestFirst() {
        var rng = SplitMix64(state: 0x0FF1_1AE)
        for _ in 0..<40 {
            let prompts = Self.workload(&rng)
            let n = prompts.count
            let tree = PromptPrefixTree(prompts: prompts)
            #expect(tree.order.sorted() == Array(0..<n), "a permutation of the requests")
            #expect((0..<n).allSatisfy { tree.order[tree.rank[$0]] == $0 })
            var lcp = [[Int]](repeating: [Int](repeating: 0, count: n), count: n)
            for i in 0..<n { for j in 0..<n { lcp[i][j] = Self.lcp(prompts[i], prompts[j]) } }
            // Every set of prompts sharing a prefix is contiguous in the order: for
            // positions a < b < c, lcp(a, c) ≤ lcp(a, b) and ≤ lcp(b, c).
            let o = tree.order
            var contiguous = true
            for a in 0..<n { for b in (a + 1)..<max(a + 1, n) { for c in (b + 1)..<max(b + 1, n) {
                if lcp[o[a]][o[c]] > min(lcp[o[a]][o[b]], lcp[o[b]][o[c]]) { contiguous = false }
            } } }
            #expect(contiguous)
            // A prompt that is a prefix of another runs first (it computes the prefix).
            var prefixFirst = true
            for i in 0..<n { for j in 0..<n where i != j && lcp[i][j] == prompts[i].tokens.count && prompts[j].tokens.count > prompts[i].tokens.count {
                if tree.rank[i] > tree.rank[j] { prefixFirst = false }
            } }
            #expect(prefixFirst)
            // The longest prefix each prompt shares with another of its adapter.
            var depths = true
            for i in 0..<n {
                let best = (0..<n).filter { $0 != i }.map { lcp[i][$0] }.max() ?? 0
                if tree.sharedDepth(of: i) != best { depths = false }
                let path = tree.sharedPath(of: i).map { tree.nodes[$0].depth }
                if path != path.sorted() || Set(path).count != path.count { depths = false }
            }
            #expect(depths)
            // Top-level groups (prompts sharing at least one token) come as runs, by their
            // shared tokens (brute force), largest first; ties by the smallest index.
            var runs: [[Int]] = []
            for i in o {
                if let last = runs.last?.last, lcp[last][i] >= 1 { runs[runs.count - 1].append(i) } else { runs.append([i]) }
            }
            let keys = runs.map { (Self.savings($0.map { prompts[$0] }), -($0.min() ?? 0)) }
            #expect(zip(keys, keys.dropFirst()).allSatisfy { $0 >= $1 }, "groups by savings descending: \(keys)")
            // The runs are exactly the groups: no two runs share a token prefix.
            var separate = true
            for x in runs.indices { for y in runs.indices where x < y {
                if runs[x].contains(where: { i in runs[y].contains { lcp[i][$0] > 0 } }) { separate = false }
            } }
            #expect(separate)
        }
    }

    @Test func blockTreeGroupsOnlyWhatTheCacheServes() {
        // Blocks of 4; a prompt's cacheable blocks lie within its first count − 1 tokens.
        let prompts: [Prompt] = [
            (0, [9, 1, 2, 3, 4, 5, 6, 7, 8]),        // blocks A B
            (0, [9, 1, 2, 50, 51, 52, 53, 54]),      // C: 3 tokens in common with 0, no block
            (0, [9, 1, 2, 3, 4, 5, 6, 7, 70, 71]),   // A B: two blocks shared with 0
            (0, [1, 2, 3]),                          // no full block: a root member
            (0, [0, 0, 0, 0, 0, 1]),                 // D: would sort first by tokens
            (5, [9, 1, 2, 3, 4, 5, 6, 7, 8]),        // A B under another adapter: shares nothing
        ]
        let tree = PromptPrefixTree(prompts: prompts, blockSize: 4)
        #expect(tree.order == [3, 0, 2, 1, 4, 5], "the shared group, then the rest in input order: \(tree.order)")
        #expect(tree.sharedDepth(of: 0) == 2 && tree.sharedDepth(of: 2) == 2, "depths count blocks")
        #expect(tree.sharedDepth(of: 1) == 0 && tree.sharedDepth(of: 4) == 0 && tree.sharedDepth(of: 5) == 0)
        // The token-level tree groups 0, 1 and 2 by their common first tokens instead.
        let tokens = PromptPrefixTree(prompts: prompts)
        #expect(tokens.sharedDepth(of: 1) == 3)
        // Workloads without any shared block keep the input order exactly.
        var rng = SplitMix64(state: 77)
        let distinct: [Prompt] = (0..<50).map { i in (0, [Int32(i % 3)] + (0..<(2 + Int(rng.next() % 40))).map { _ in Int32(100 + rng.next() % 1000) }) }
        let cut = PromptPrefixTree(prompts: distinct, blockSize: 16)
        #expect(!(0..<50).contains { cut.sharedDepth(of: $0) > 0 }, "random tokens share no 16-token block")
        let short = (0..<50).filter { distinct[$0].tokens.count <= 16 }
        #expect(cut.order == short + (0..<50).filter { distinct[$0].tokens.count > 16 })
    }

    @Test func adaptersNeverShareAndEdgeCases() {
        // Same tokens, two adapters: no sharing at all.
        let t: [Int32] = [1, 2, 3, 4]
        let tree = PromptPrefixTree(prompts: [(0, t), (9, t), (0, t + [5]), (9, [1, 2])])
        #expect(tree.sharedDepth(of: 0) == 4 && tree.sharedDepth(of: 2) == 4)
        #expect(tree.sharedDepth(of: 1) == 2 && tree.sharedDepth(of: 3) == 2)
        #expect(tree.rank[0] + 1 == tree.rank[2])
        #expect(tree.rank[3] + 1 == tree.rank[1], "the adapter-9 pair runs together, its prefix first")
        // Nothing and a single prompt.
        #expect(PromptPrefixTree(prompts: []).order.isEmpty)
        let one = PromptPrefixTree(prompts: [(0, [42])])
        #expect(one.order == [0] && one.sharedDepth(of: 0) == 0)
    }
}
