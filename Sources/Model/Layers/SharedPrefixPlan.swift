import BCKernels

/// The shared runs of physical KV blocks among the views of one layer's attention (a
/// prefix tree over the views' segments): which views read the same memory for which
/// positions. Found from the segments alone — two views share a run when their segments
/// there are the same (key pointer, value pointer, start, count), as the blocks of a
/// prefix-cache hit, a fork or n > 1 samples are — so no caller says what is shared.
///
/// Multi-level: views sharing a run are split again where they part, and sub-groups that
/// go on sharing get a deeper node (a long system prompt shared by all, a document
/// shared by some, ...). Every node has at least two views; its positions are a run of
/// whole segments: node.start..<node.end.
package struct SharedPrefixPlan {
    package struct Node {
        /// The run's segments (the first member's: the same memory as every member's).
        package let view: KVView
        package let start: Int
        package let end: Int
        /// Views reading the run, ascending.
        package let members: [Int]
    }

    package private(set) var nodes: [Node] = []
    /// Per view: the nodes it reads, by ascending positions (empty: it shares nothing).
    package private(set) var path: [[Int]]
    /// Per view: the first position it reads alone (its own part starts there).
    package private(set) var ownStart: [Int]

    /// A run's identity in a view: the memory of one block (`key`, `value`: addresses or
    /// block numbers) holding positions start..<start+count.
    package struct Run: Equatable {
        package let key: Int
        package let value: Int
        package let start: Int
        package let count: Int

        package init(key: Int, value: Int, start: Int, count: Int) {
            self.key = key
            self.value = value
            self.start = start
            self.count = count
        }
    }

    /// The plan of views whose segments point into the blocks themselves (f32 storage):
    /// a segment's identity is its addresses; a node's view is its first member's segments.
    package init(views: [KVView]) {
        self.init(runs: views.map { v in
            v.segments.map { Run(key: Int(bitPattern: $0.keys), value: Int(bitPattern: $0.values), start: $0.start, count: $0.count) }
        }) { view, runs in KVView(segments: Array(views[view].segments[runs]), rowStride: views[view].rowStride) }
    }

    /// The plan of views given as runs of block identities (a quantized cache, whose
    /// segments are decoded copies): nodes carry no view (`view` has no segments).
    package init(runs: [[Run]]) {
        self.init(runs: runs) { _, _ in KVView(segments: [], rowStride: 0) }
    }

    private init(runs views: [[Run]], view makeView: (Int, Range<Int>) -> KVView) {
        path = Array(repeating: [], count: views.count)
        ownStart = Array(repeating: 0, count: views.count)
        // Work list of (views, first run index still to split on). Members are kept
        // ascending and groups are visited in order of their first member, so the plan
        // is a function of the views alone.
        var pending: [([Int], Int)] = [(Array(views.indices), 0)]
        while let (members, s) = pending.popLast() {
            var groups: [[Int]] = []
            var byKey: [Int: Int] = [:]
            for m in members where s < views[m].count {
                let key = views[m][s].key
                if let g = byKey[key] { groups[g].append(m) } else {
                    byKey[key] = groups.count
                    groups.append([m])
                }
            }
            for g in groups.reversed() where g.count >= 2 {
                let first = views[g[0]]
                // Members whose run s differs in anything but the key (a partial block
                // read to different lengths) do not share it.
                let sharing = g.filter { views[$0][s] == first[s] }
                guard sharing.count >= 2 else { continue }
                var e = s + 1
                while e < first.count, sharing.allSatisfy({ e < views[$0].count && views[$0][e] == first[e] }) { e += 1 }
                let node = Node(view: makeView(sharing[0], s..<e), start: first[s].start,
                                end: first[e - 1].start + first[e - 1].count, members: sharing)
                for m in sharing {
                    path[m].append(nodes.count)
                    ownStart[m] = node.end
                }
                nodes.append(node)
                pending.append((sharing, e))
            }
        }
    }
}
