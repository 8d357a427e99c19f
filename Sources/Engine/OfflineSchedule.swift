/// The engine's offline batch mode (`EngineOptions.offline`; BatchLLM): the requests
/// are ordered by a prefix tree over all live requests' prompts (`PromptPrefixTree`,
/// rebuilt when requests were submitted), so the requests sharing a prefix run
/// together, the larger shared prefixes first; and a request is admitted only once
/// the prefix it shares with an admitted request is in the cache — computed once, by
/// the first of them, and then attached by the others (`PagedKVCache.attachPrefix`)
/// instead of each prefilling it in the same steps.
///
/// Holding is safe: a request waits only for an admitted request still prefilling the
/// shared prefix; that request's prompt holds the whole prefix, so it reaches it unless
/// it finishes or is preempted — and then it no longer holds anyone back.
struct OfflineSchedule {
    private var tree: PromptPrefixTree?
    /// Request id → index into the tree's input.
    private var index: [UInt64: Int] = [:]
    /// Tokens per KV block; the tree's depths count blocks (set by `prepare`).
    private var blockSize = 1

    /// Requests were added: the tree is rebuilt at the next `prepare`.
    mutating func invalidate() { tree = nil }

    /// Builds the tree over `requests` (the live ones, in submission order) when it is
    /// stale, at the cache's block granularity (`PromptPrefixTree(prompts:blockSize:)`):
    /// only what the prefix cache can serve groups requests; the others keep their
    /// submission order (on a workload without shared prefixes offline mode then
    /// schedules as FCFS does, instead of in the prompts' lexicographic order).
    mutating func prepare(_ requests: [Engine.Request], blockSize: Int) {
        guard tree == nil else { return }
        self.blockSize = blockSize
        index = [:]
        for (k, r) in requests.enumerated() { index[r.id] = k }
        tree = PromptPrefixTree(prompts: requests.map { ($0.spec.adapterKey, $0.spec.prompt) }, blockSize: blockSize)
    }

    /// The request's place in the depth-first order (after `prepare`).
    func rank(_ r: Engine.Request) -> Int {
        guard let tree, let k = index[r.id] else { return Int.max }
        return tree.rank[k]
    }

    /// Per tree node: the fewest positions any admitted request below it has computed.
    struct Holds {
        fileprivate var minComputed: [Int: Int] = [:]
    }

    /// Notes that request `r` is admitted with `computed` positions in the cache.
    func note(_ r: Engine.Request, computed: Int, in holds: inout Holds) {
        guard let tree, let k = index[r.id] else { return }
        for v in tree.sharedPath(of: k) { holds.minComputed[v] = min(holds.minComputed[v] ?? Int.max, computed) }
    }

    /// Whether request `r` (not admitted) must wait: an admitted request sharing a
    /// prefix with it has not computed the full blocks of that prefix that `r` could
    /// attach (the tree's nodes are those blocks, within the prompt's first
    /// prompt − 1 positions, which is all the prefix cache serves).
    func held(_ r: Engine.Request, holds: Holds) -> Bool {
        guard let tree, let k = index[r.id], !holds.minComputed.isEmpty else { return false }
        for v in tree.sharedPath(of: k) {
            guard let computed = holds.minComputed[v] else { continue }
            if computed < tree.nodes[v].depth * blockSize { return true }  // depths count full blocks
        }
        return false
    }
}
