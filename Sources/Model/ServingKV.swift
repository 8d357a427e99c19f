import BCCore
import BCKernels
import BCKV

/// The serving side of a forward pass over a `TokenBatch`: every call on the `KVCache`
/// a pass makes is here, in order —
///
///     init      checks the batch against the model and the cache (throws before anything changes)
///     reserve() makes room for every sequence's new positions (all or nothing)
///     store     writes each layer's new key/value rows into the cache (after RoPE)
///     read      gathers each sequence's cached segments (views with row stride kvDim)
///     commit()  records the tokens (prefix caching) and commits the new lengths
///
/// The layer math only sees it as a `KVSource`.
final class ServingKV: KVSource {
    let batch: TokenBatch
    let cache: KVCache
    private let config: ModelConfig
    /// The batch's sequences, ascending.
    private let order: [Int]
    /// The length of sequence order[k] after the batch.
    private let newLength: [Int]
    /// Attention rows of the whole batch (view k = sequence order[k]), or of each
    /// sequence alone (view 0) when the cache's segments do not stay valid.
    private let allRows: [AttentionRow]
    private let rowsBySequence: [[AttentionRow]]
    /// Shared-prefix attention of the pass (on/off, counters).
    private let sharedPrefix: SharedPrefixAttention

    init(batch: TokenBatch, cache: KVCache, config c: ModelConfig,
         sharedPrefix: SharedPrefixAttention = SharedPrefixAttention(enabled: false)) throws {
        let n = batch.count
        guard n > 0 else { throw BatchCoreError.invalid("empty batch") }
        guard batch.positions.count == n, batch.sequences.count == n, batch.wantLogits.count == n else {
            throw BatchCoreError.invalid("batch arrays differ in length")
        }
        guard cache.kvDim == c.kvDim else { throw BatchCoreError.invalid("KV cache row size does not match the model") }
        var next: [Int: Int] = [:]
        for i in 0..<n {
            let t = batch.tokens[i]
            guard t >= 0, Int(t) < c.vocabSize else {
                throw BatchCoreError.invalid("token \(t) at batch index \(i) is outside the vocabulary (0..<\(c.vocabSize))")
            }
            let s = batch.sequences[i], p = batch.positions[i]
            let expected = next[s] ?? cache.length(of: s)
            guard p == expected else {
                throw BatchCoreError.invalid("sequence \(s): batch index \(i) has position \(p), expected \(expected)")
            }
            guard p < c.contextLength else {
                throw BatchCoreError.invalid("position \(p) exceeds the context length \(c.contextLength)")
            }
            next[s] = p + 1
        }
        self.batch = batch
        self.cache = cache
        self.sharedPrefix = sharedPrefix
        config = c
        order = next.keys.sorted()
        newLength = order.map { next[$0] ?? 0 }
        var index: [Int: Int] = [:]
        for (k, s) in order.enumerated() { index[s] = k }
        var bySequence = [[AttentionRow]](repeating: [], count: order.count)
        for i in 0..<n {
            guard let k = index[batch.sequences[i]] else { continue }  // every sequence is in `order`
            bySequence[k].append(AttentionRow(row: i, view: k, position: batch.positions[i], first: bySequence[k].isEmpty))
        }
        if cache.segmentsStayValid {
            allRows = bySequence.flatMap { $0 }
            rowsBySequence = []
        } else {
            allRows = []
            rowsBySequence = bySequence.map { $0.map { AttentionRow(row: $0.row, view: 0, position: $0.position, first: $0.first) } }
        }
    }

    /// Makes room for every sequence of the batch in one all-or-nothing reservation: a
    /// KV-full (or out-of-memory) error leaves the cache exactly as it was.
    func reserve() throws {
        try cache.reserve(order.indices.map { KVGrowth(sequence: order[$0], length: newLength[$0]) })
    }

    func store(layer: Int, qkv: UnsafePointer<Float>, rowStride: Int) throws {
        let d = config.embeddingDim, kvd = config.kvDim
        for i in 0..<batch.count {
            let row = qkv + i * rowStride
            cache.write(layer: layer, sequence: batch.sequences[i], position: batch.positions[i],
                        keys: row + d, values: row + d + kvd)
        }
    }

    /// One parallel job over all sequences when their segments can be gathered first
    /// (then views sharing physical blocks read them once, `Transformer.attendShared`).
    /// A cache decoding into one scratch (quantized storage) is read one sequence at a
    /// time, except the sequences that share blocks: each shared run is decoded once and
    /// each of their own positions copied out (`sharedWork`), and they run as one job
    /// like f32 views.
    func read(layer: Int, qkv: UnsafePointer<Float>, rowStride: Int, _ body: (AttentionWork) -> Void) throws {
        let window = cache.window(layer: layer)
        if cache.segmentsStayValid {
            var views: [KVView] = []
            views.reserveCapacity(order.count)
            for k in order.indices { views.append(try gather(layer: layer, k)) }
            body(AttentionWork(views: views, rows: allRows, window: window, sharedPrefix: sharedPrefix))
            return
        }
        var alone = Array(order.indices)
        if sharedPrefix.enabled, let plan = sharedRuns(layer: layer) {
            let sharing = order.indices.filter { !plan.path[$0].isEmpty }
            var floats = 0
            for n in plan.nodes { floats += (n.end - n.start) * config.kvDim * 2 }
            for k in sharing { floats += max(0, newLength[k] - plan.ownStart[k]) * config.kvDim * 2 }
            let buffer: Scratch?
            do { buffer = floats <= sharedPrefix.maxPartFloats ? try Scratch(floats) : nil } catch { buffer = nil }
            if let buffer {
                let work = try sharedWork(layer: layer, plan: plan, sharing: sharing, window: window, into: buffer.pointer)
                withExtendedLifetime(buffer) { body(work) }
                alone = order.indices.filter { plan.path[$0].isEmpty }
            } else {
                // No room for the decoded runs: those sequences read alone, counted.
                sharedPrefix.countFallbacks(sharing.reduce(0) { $0 + rowsBySequence[$1].count }, positions: 0)
            }
        }
        var positions = 0
        for k in alone { for row in rowsBySequence[k] { positions += min(row.position + 1, window ?? .max) } }
        sharedPrefix.countPositions(positions)
        for k in alone {
            body(AttentionWork(views: [try gather(layer: layer, k)], rows: rowsBySequence[k], window: window))
        }
    }

    /// The shared runs of physical blocks among the batch's sequences in a layer (from
    /// the cache's block identities), or nil when none shares.
    private func sharedRuns(layer: Int) -> SharedPrefixPlan? {
        let runs = order.indices.map { k in
            cache.blockIdentities(layer: layer, sequence: order[k], length: newLength[k]).map {
                SharedPrefixPlan.Run(key: $0.block, value: $0.block, start: $0.start, count: $0.count)
            }
        }
        let plan = SharedPrefixPlan(runs: runs)
        return plan.nodes.isEmpty ? nil : plan
    }

    /// The attention work of the sequences `sharing` (indices into `order`) of a cache
    /// decoding into one scratch: each node of `plan` decoded once (from its first
    /// member) and each sequence's own positions, copied into one buffer; a sequence's
    /// view is its path's node runs then its own run, so views of a node hold the same
    /// memory and `attend` reads it once for all of them. The decoded floats are the ones
    /// the per-sequence gather gives (the same decode, copied). `buffer`: 2·kvDim floats
    /// per node position and per own position of the sharing sequences.
    private func sharedWork(layer: Int, plan: SharedPrefixPlan, sharing: [Int], window: Int?,
                            into buffer: UnsafeMutablePointer<Float>) throws -> AttentionWork {
        let kvd = config.kvDim
        var at = buffer
        /// Positions a..<b of decoded segments into the buffer, as one run.
        func copy(_ segments: [KVSegment], _ a: Int, _ b: Int) -> KVSegment? {
            guard a < b else { return nil }
            let keys = at, values = at + (b - a) * kvd
            for seg in segments {
                let lo = max(a, seg.start), hi = min(b, seg.start + seg.count)
                if lo >= hi { continue }
                (keys + (lo - a) * kvd).update(from: seg.keys + (lo - seg.start) * kvd, count: (hi - lo) * kvd)
                (values + (lo - a) * kvd).update(from: seg.values + (lo - seg.start) * kvd, count: (hi - lo) * kvd)
            }
            at += (b - a) * kvd * 2
            return KVSegment(keys: keys, values: values, start: a, count: b - a)
        }
        var nodeRuns: [KVSegment?] = []
        for n in plan.nodes {
            let first = n.members[0]
            nodeRuns.append(copy(try cache.segments(layer: layer, sequence: order[first], length: n.end), n.start, n.end))
        }
        var views: [KVView] = [], rows: [AttentionRow] = []
        for (j, k) in sharing.enumerated() {
            let own = copy(try cache.segments(layer: layer, sequence: order[k], length: newLength[k]), plan.ownStart[k], newLength[k])
            views.append(KVView(segments: (plan.path[k].map { nodeRuns[$0] } + [own]).compactMap { $0 }, rowStride: kvd))
            rows += rowsBySequence[k].map { AttentionRow(row: $0.row, view: j, position: $0.position, first: $0.first) }
        }
        return AttentionWork(views: views, rows: rows, window: window, sharedPrefix: sharedPrefix)
    }

    /// The cached keys/values of sequence order[k] in a layer, up to its length after the
    /// batch. Throwing: a gather that cannot complete must fail the pass, never hand
    /// attention fewer rows.
    private func gather(layer: Int, _ k: Int) throws -> KVView {
        KVView(segments: try cache.segments(layer: layer, sequence: order[k], length: newLength[k]), rowStride: config.kvDim)
    }

    /// Records the batch's tokens and commits every sequence's new length.
    func commit() {
        for i in 0..<batch.count {
            cache.record(sequence: batch.sequences[i], position: batch.positions[i], token: batch.tokens[i])
        }
        for (k, s) in order.enumerated() { cache.commit(sequence: s, length: newLength[k]) }
    }
}
