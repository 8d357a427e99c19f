/// A token-level prefix tree (a radix tree: chains without branches are one node) over
/// the prompts of a set of requests, for the offline batch mode (BatchLLM's "global
/// prefix identification"). Prompts of different adapter keys never share a node — the
/// prefix cache never shares blocks across adapters (`PrefixIndex` hashes the adapter
/// in) — so they meet only at the root, at depth 0.
///
/// A node stands for one token prefix: `depth` tokens long; `count` prompts start with
/// it (the node's subtree); `members` are the prompts that are exactly that prefix.
///
/// `order` is a depth-first order of the prompts: every subtree (every set of prompts
/// sharing a prefix) is a contiguous run of it, so requests sharing a prefix are
/// scheduled together. A node's members come before its children (a prompt that is
/// the shared prefix computes it for the others); children are visited by their
/// subtree's `savings` (the prompt tokens the prefix cache can serve inside it:
/// Σ over its nodes of edge length × (count − 1)), largest first, ties by the smallest
/// input index — deterministic, and the larger shared prefixes run first.
///
/// Built by sorting the prompts (adapter key, then tokens lexicographically) and
/// folding the longest common prefixes of neighbours into the tree with a stack:
/// O(n log n) prompt comparisons, O(n) nodes.
package struct PromptPrefixTree: Sendable {
    package struct Node: Sendable {
        /// Tokens of the prefix this node stands for (0: the root).
        package var depth: Int
        package var parent: Int
        package var children: [Int] = []
        /// Input indices whose prompt is exactly this prefix, ascending.
        package var members: [Int] = []
        /// Prompts in the subtree.
        package var count = 0
        /// Prompt tokens shared inside the subtree, this node's own edge included.
        package var savings = 0
        /// The smallest input index in the subtree (tie-break).
        package var first = Int.max
    }

    package private(set) var nodes: [Node]
    /// Input indices in scheduling (depth-first) order.
    package private(set) var order: [Int] = []
    /// Per input index: its position in `order`.
    package private(set) var rank: [Int] = []
    /// Per input index: the node it is a member of.
    package private(set) var nodeOf: [Int] = []

    /// `prompts[i]`: request i's adapter key (0: the base model) and prompt tokens.
    package init(prompts: [(adapter: UInt64, tokens: [Int32])]) {
        let n = prompts.count
        nodes = [Node(depth: 0, parent: -1)]
        nodeOf = [Int](repeating: 0, count: n)
        func less(_ a: Int, _ b: Int) -> Bool {
            let x = prompts[a], y = prompts[b]
            if x.adapter != y.adapter { return x.adapter < y.adapter }
            if x.tokens != y.tokens { return x.tokens.lexicographicallyPrecedes(y.tokens) }
            return a < b
        }
        let sorted = (0..<n).sorted(by: less)
        // The stack holds the path from the root to the previous prompt's node.
        var stack = [0]
        for (k, i) in sorted.enumerated() {
            let tokens = prompts[i].tokens
            var l = 0
            if k > 0, prompts[sorted[k - 1]].adapter == prompts[i].adapter {
                let prev = prompts[sorted[k - 1]].tokens
                let m = min(prev.count, tokens.count)
                while l < m && prev[l] == tokens[l] { l += 1 }
            }
            var last = -1
            while nodes[stack[stack.count - 1]].depth > l { last = stack.removeLast() }
            let top = stack[stack.count - 1]
            if nodes[top].depth < l {
                // The previous prompt's branch leaves `top` deeper than l: split its edge
                // with a node at depth l (`last` is that branch's first node below l).
                let mid = nodes.count
                nodes.append(Node(depth: l, parent: top, children: [last]))
                if let c = nodes[top].children.firstIndex(of: last) { nodes[top].children[c] = mid }
                nodes[last].parent = mid
                stack.append(mid)
            }
            let at = stack[stack.count - 1]
            if nodes[at].depth == tokens.count {
                nodes[at].members.append(i)  // a duplicate prompt, or the previous one's prefix
                nodeOf[i] = at
            } else {
                let leaf = nodes.count
                nodes.append(Node(depth: tokens.count, parent: at, members: [i]))
                nodes[at].children.append(leaf)
                nodeOf[i] = leaf
                stack.append(leaf)
            }
        }
        // Subtree aggregates, children before parents (post-order without recursion).
        var post: [Int] = []
        var todo = [0]
        while let v = todo.popLast() {
            post.append(v)
            todo.append(contentsOf: nodes[v].children)
        }
        for v in post.reversed() {
            var count = nodes[v].members.count, savings = 0, first = nodes[v].members.min() ?? Int.max
            for c in nodes[v].children {
                count += nodes[c].count
                savings += nodes[c].savings
                first = min(first, nodes[c].first)
            }
            if v != 0 { savings += (nodes[v].depth - nodes[nodes[v].parent].depth) * (count - 1) }
            nodes[v].count = count
            nodes[v].savings = savings
            nodes[v].first = first
        }
        let key = nodes.map { (savings: $0.savings, first: $0.first) }
        for v in nodes.indices {
            nodes[v].members.sort()
            nodes[v].children.sort { (key[$0].savings, -key[$0].first) > (key[$1].savings, -key[$1].first) }
        }
        // Depth-first: members, then children in their order.
        order.reserveCapacity(n)
        todo = [0]
        while let v = todo.popLast() {
            order += nodes[v].members
            todo += nodes[v].children.reversed()
        }
        rank = [Int](repeating: 0, count: n)
        for (p, i) in order.enumerated() { rank[i] = p }
    }

    /// The tree over what a prefix cache of `blockSize`-token blocks can serve: prompt i
    /// becomes the sequence of its full blocks within its first prompt − 1 tokens (the
    /// cache never serves a prompt's last token), each block named by its tokens (the
    /// same tokens, the same name; names are given in input order). Depths count blocks.
    /// Prompts sharing less than a block share nothing here, so coincidental first tokens
    /// do not reorder them: among prompts that share no block the order is the input order
    /// (after the prompts shorter than one such block, the root's members).
    package init(prompts: [(adapter: UInt64, tokens: [Int32])], blockSize: Int) {
        let bs = max(1, blockSize)
        var names: [[Int32]: Int32] = [:]
        let blocks = prompts.map { p -> (adapter: UInt64, tokens: [Int32]) in
            let n = max(0, p.tokens.count - 1) / bs
            var seq: [Int32] = []
            seq.reserveCapacity(n)
            for b in 0..<n {
                let key = Array(p.tokens[(b * bs)..<((b + 1) * bs)])
                if let name = names[key] { seq.append(name) } else {
                    let name = Int32(truncatingIfNeeded: names.count)
                    names[key] = name
                    seq.append(name)
                }
            }
            return (p.adapter, seq)
        }
        self.init(prompts: blocks)
    }

    /// The nodes on prompt `i`'s path that it shares with at least one other prompt
    /// (count ≥ 2, depth ≥ 1), from the shallowest to the deepest.
    package func sharedPath(of i: Int) -> [Int] {
        var path: [Int] = []
        var v = nodeOf[i]
        while v > 0 {
            if nodes[v].count >= 2 { path.append(v) }
            v = nodes[v].parent
        }
        return path.reversed()
    }

    /// The longest prefix prompt `i` shares with another prompt of the same adapter key.
    package func sharedDepth(of i: Int) -> Int { sharedPath(of: i).last.map { nodes[$0].depth } ?? 0 }
}
