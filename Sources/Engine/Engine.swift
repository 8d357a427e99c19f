import BCCore
import BCKV
import BCModel
import BCTokenizer
/// Continuous batching ("Orca" iteration-level scheduling, with Sarathi-Serve's chunked
/// prefill piggybacked on decodes): each step every running sequence decodes one
/// token and waiting prompts are prefilled in chunks filling the rest of the token
/// budget — all in ONE forward pass over the flattened batch. A new prompt first
/// reuses cached prefix blocks. When the KV cache runs out, the lowest-priority,
/// latest-arrived request is preempted: its blocks are freed and it is recomputed
/// later from its prompt plus what it generated (never dropped). Every step runs the
/// batch-invariant forward, so a sequence's tokens do not depend on its batch-mates,
/// and each sequence samples with its own seeded RNG.
///
/// Not thread-safe: one thread drives an engine (submit, step, poll, cancel).
package final class Engine {
    package let model: LanguageModel
    package let cache: PagedKVCache
    package var options: EngineOptions

    final class Sequence {
        let index: Int
        /// The sequence's id in the KV cache, fixed at submit.
        let cacheID: Int
        /// True while the cache holds the sequence (admitted and not preempted or finished).
        var inCache = false
        var tokens: [Int32]          // prompt + generated
        var computed = 0             // positions in the KV cache
        var generated = 0
        var sampler: Sampler
        var decoder: StreamingDecoder
        var emitted = ""             // text sent so far
        var pending = ""             // text held back (could start a stop string)
        var finished = false
        var firstTokenTime = Double.nan
        var lastTokenTime = Double.nan
        var gapSum = 0.0
        var preemptions = 0
        var cachedPrompt = 0
        init(index: Int, cacheID: Int, tokens: [Int32], sampler: Sampler, decoder: StreamingDecoder) {
            self.index = index
            self.cacheID = cacheID
            self.tokens = tokens
            self.sampler = sampler
            self.decoder = decoder
        }
    }

    final class Request {
        let id: UInt64
        let spec: GenerationRequest
        let arrival: Int
        let submitTime: Double
        var seqs: [Sequence]
        /// Parallel samples are forked after the shared prompt (sequence 0) is computed.
        var forked = false
        init(id: UInt64, spec: GenerationRequest, arrival: Int, submitTime: Double, seqs: [Sequence]) {
            self.id = id
            self.spec = spec
            self.arrival = arrival
            self.submitTime = submitTime
            self.seqs = seqs
        }
        var active: [Sequence] { seqs.filter { !$0.finished } }
    }

    private var requests: [UInt64: Request] = [:]
    private var order: [UInt64] = []        // submission order of live requests
    private var events: [EngineEvent] = []
    private var nextID: UInt64 = 1
    private var nextCacheID = 0
    private var arrivals = 0
    /// Static batching: the current fixed group (runs until all its requests finish).
    private var staticGroup: Set<UInt64> = []
    /// Offline mode: the prefix-tree order and the admission holds (`OfflineSchedule`).
    private var offline = OfflineSchedule()
    package private(set) var metrics = EngineMetrics()
    /// The adapter budget: which adapters stay resident (see `AdapterResidency`).
    let adapterResidency: AdapterResidency
    /// Shared-prefix attention of every step (on/off, counters).
    let sharedPrefix: SharedPrefixAttention

    package init(model: LanguageModel, cache: PagedKVCache, options: EngineOptions = .init()) throws {
        guard options.maxBatchedTokens > 0, options.maxSequences > 0 else {
            throw BatchCoreError.invalid("max_batched_tokens and max_seqs must be > 0")
        }
        guard options.adapterBytes >= 0 else { throw BatchCoreError.invalid("adapter_bytes must be >= 0") }
        guard !(options.offline && options.staticBatching) else {
            throw BatchCoreError.invalid("offline and static_batching exclude each other")
        }
        adapterResidency = AdapterResidency(budget: options.adapterBytes)
        sharedPrefix = SharedPrefixAttention(enabled: options.sharedPrefixAttention)
        self.model = model
        self.cache = cache
        self.options = options
    }

    // MARK: requests

    @discardableResult
    package func submit(_ spec: GenerationRequest) throws -> UInt64 {
        guard !spec.prompt.isEmpty else { throw BatchCoreError.invalid("the prompt has no tokens") }
        guard spec.maxTokens >= 1 else { throw BatchCoreError.invalid("max_tokens must be >= 1") }
        guard spec.n >= 1, spec.n <= 128 else { throw BatchCoreError.invalid("n must be in 1...128") }
        try spec.sampling.validate()
        if let a = spec.adapter {
            guard a.model === model else { throw BatchCoreError.invalid("the adapter was loaded for another model") }
            guard spec.adapterScale.isFinite else { throw BatchCoreError.invalid("adapter scale \(spec.adapterScale) is not finite") }
        }
        let vocab = model.config.vocabSize
        if let bad = spec.prompt.first(where: { $0 < 0 || Int($0) >= vocab }) {
            throw BatchCoreError.invalid("prompt token \(bad) is outside the vocabulary")
        }
        guard spec.prompt.count + spec.maxTokens <= cache.maxLength else {
            throw BatchCoreError.invalid("prompt (\(spec.prompt.count)) + max_tokens (\(spec.maxTokens)) exceed n_ctx \(cache.maxLength)")
        }
        // A request the whole KV budget cannot hold even alone would never run: refuse it
        // now. A sample stores at most the prompt and all its tokens but the last; the
        // cache's own reservation plan judges whether that fits an empty cache.
        let positions = spec.prompt.count + spec.maxTokens - 1
        guard cache.fitsAlone(length: positions) else {
            throw BatchCoreError(.kvFull, "prompt (\(spec.prompt.count)) + max_tokens (\(spec.maxTokens)) need \(positions) "
                + "positions of KV cache; the KV budget of \(cache.budgetBytes) bytes holds fewer even with nothing else running")
        }
        var seqs: [Sequence] = []
        for i in 0..<spec.n {
            var params = spec.sampling
            params.seed = spec.sampling.seed &+ UInt64(i) &* 0x9E37_79B9_7F4A_7C15
            seqs.append(Sequence(index: i, cacheID: nextCacheID + i, tokens: spec.prompt,
                                 sampler: try Sampler(params: params), decoder: StreamingDecoder(tokenizer: model.tokenizer)))
        }
        if let a = spec.adapter { try adapterResidency.admit(a) }
        let id = nextID
        nextID += 1
        nextCacheID += spec.n
        requests[id] = Request(id: id, spec: spec, arrival: arrivals, submitTime: Generator.monotonicSeconds(), seqs: seqs)
        arrivals += 1
        order.append(id)
        offline.invalidate()
        metrics.submitted += 1
        return id
    }

    /// Cancels a request at any time: frees its KV and reports each unfinished
    /// sequence as cancelled. An id that is not live (never issued, finished or already
    /// cancelled) is `.notFound`, and nothing changes.
    package func cancel(_ id: UInt64) throws {
        guard let r = requests[id] else {
            throw BatchCoreError(.notFound, "no live request \(id) (never submitted, finished or already cancelled)")
        }
        for s in r.seqs where !s.finished { finish(r, s, .cancelled) }
    }

    /// Events since the last call, in order.
    package func poll() -> [EngineEvent] {
        defer { events.removeAll(keepingCapacity: true) }
        return events
    }

    package var hasWork: Bool { !requests.isEmpty }
    package var liveRequests: Int { requests.count }

    // MARK: step

    /// One iteration: schedule, run one forward over the flattened batch, sample.
    /// Returns the number of tokens processed (0 when there is nothing to do).
    @discardableResult
    package func step() throws -> Int {
        guard !requests.isEmpty else { return 0 }
        let t0 = Generator.monotonicSeconds()
        var processed = 0
        // When the batch does not fit in the KV cache:
        // - another request holding KV is preempted (the lowest-ranked, never the top one)
        //   and the step retries with decodes only, so a preempted request is not
        //   re-admitted in the same step (it would take back the blocks just freed);
        // - else, with decodes in the plan, prefills are dropped; decodes alone that do
        //   not fit come from the only request holding KV: it cannot grow even alone;
        // - else the plan is prefills only, every chunk after the first was admitted
        //   because it fit with the rows before it, so the first chunk does not fit: if
        //   another request holds KV it waits (left out of this step), else the request
        //   does not fit even alone and finishes with an error — it must not wait forever
        //   (step returning 0 with the request live) nor hold back the requests behind it.
        // The request's own samples (n > 1) are the last resort before an error: when the
        // request alone is all that holds KV and its samples together do not fit, its
        // highest-index sample holding KV is preempted (recomputed later, like a preempted
        // request) as long as another of its samples keeps KV — sample 0 always runs, and
        // each sample fits alone (checked at submit).
        // Ends: every retry preempts a request or a sample holding KV, turns prefills off,
        // or leaves out a request, and all of them run out.
        var allowPrefill = true
        var left: Set<UInt64> = []
        while true {
            let plan = try schedule(allowPrefill: allowPrefill, leaving: left)
            if plan.rows.isEmpty {
                // Nothing could be planned although nothing was preempted or left out: the
                // top request cannot run at all.
                if allowPrefill && left.isEmpty, let top = ranked().first {
                    fail(top, "the request does not fit in the KV cache")
                }
                break
            }
            // The step's adapters must be resident (within the adapter budget); a request
            // whose adapter cannot be read again finishes with an error and the step is
            // planned again without it.
            let failed = adapterResidency.prepare(plan.rows.compactMap { $0.request.spec.adapter }, pinned: runningAdapters())
            if !failed.isEmpty {
                for id in plan.requests.sorted() {
                    guard let r = requests[id], let a = r.spec.adapter, let e = failed[ObjectIdentifier(a)] else { continue }
                    fail(r, "the adapter could not be loaded again: \((e as? BatchCoreError)?.message ?? "\(e)")")
                }
                continue
            }
            do {
                try run(plan)
                processed = plan.rows.count
                break
            } catch let e as BatchCoreError where e.kind == .kvFull {
                if preemptLowest() { allowPrefill = false; continue }
                let first = plan.rows[0].request
                if plan.decodes > 0 {
                    if allowPrefill && plan.rows.count > plan.decodes { allowPrefill = false; continue }
                    if preemptSample(of: first) { allowPrefill = false; continue }
                    fail(first, "the request does not fit in the KV cache even alone: \(e.message)")
                    break
                }
                if requests.values.contains(where: { $0 !== first && holdsKV($0) }) {
                    left.insert(first.id)
                    continue
                }
                if preemptSample(of: first) { allowPrefill = false; continue }
                fail(first, "the request does not fit in the KV cache even alone: \(e.message)")
                break
            }
        }
        // Adapters of requests that finished in this step are idle now: back within the budget.
        adapterResidency.trim(pinned: runningAdapters())
        metrics.steps += 1
        metrics.batchedTokens += processed
        metrics.busySeconds += Generator.monotonicSeconds() - t0
        refreshMetrics()
        return processed
    }

    struct Row {
        let request: Request
        let seq: Sequence
        let position: Int
        let token: Int32
        let logits: Bool
    }

    struct Plan {
        /// Decode rows first (`decodes` of them), then prefill chunks.
        var rows: [Row] = []
        var decodes = 0
        var requests: Set<UInt64> = []
    }

    private func ranked() -> [Request] {
        let live = order.compactMap { requests[$0] }
        if options.offline {
            // The prefix tree's depth-first order (within a priority under that policy).
            offline.prepare(live, blockSize: cache.layout.blockSize)
            let byPriority = options.policy == .priority
            return live.map { (request: $0, priority: byPriority ? $0.spec.priority : 0, rank: offline.rank($0)) }
                .sorted { ($0.priority, -$0.rank) > ($1.priority, -$1.rank) }
                .map(\.request)
        }
        switch options.policy {
        case .fcfs: return live
        case .priority: return live.sorted { ($0.spec.priority, -$0.arrival) > ($1.spec.priority, -$1.arrival) }
        }
    }

    /// Decode rows for running sequences first, then prefill chunks (see below); the
    /// requests in `leaving` get no prefill chunk.
    private func schedule(allowPrefill: Bool, leaving: Set<UInt64> = []) throws -> Plan {
        var plan = Plan()
        var budget = options.maxBatchedTokens
        var seqBudget = options.maxSequences
        // Cache sequence → its length after the plan's rows: the reservation the forward
        // will make, which the cache itself judges (blocks, copy-on-write, windows, KIVI
        // residuals, evictions).
        var growth: [Int: Int] = [:]
        func fits(_ sequence: Int, _ length: Int) -> Bool {
            var g = growth
            g[sequence] = length
            return cache.canReserve(g.map { KVGrowth(sequence: $0.key, length: $0.value) })
        }
        let all = ranked()
        // Decodes.
        for r in all {
            for s in r.active where s.computed > 0 && s.tokens.count - s.computed == 1 {
                guard budget > 0, seqBudget > 0 else { break }
                growth[s.cacheID] = s.computed + 1
                plan.rows.append(Row(request: r, seq: s, position: s.computed, token: s.tokens[s.computed], logits: true))
                plan.requests.insert(r.id)
                plan.decodes += 1
                budget -= 1
                seqBudget -= 1
            }
        }
        // Prefills (chunked). Static batching admits only into an idle engine.
        if !allowPrefill { return plan }
        if options.staticBatching {
            // Fixed groups: when the previous group has finished, the next max_seqs
            // requests form a group; nothing else is admitted until it finishes.
            staticGroup = staticGroup.filter { requests[$0] != nil }
            if staticGroup.isEmpty { staticGroup = Set(all.prefix(options.maxSequences).map(\.id)) }
        }
        // Which sequences need a prefill chunk, in policy order (before the fork only
        // sequence 0 computes the shared prompt).
        var waiting: [(Request, Sequence)] = []
        for r in all where (!options.staticBatching || staticGroup.contains(r.id)) && !leaving.contains(r.id) {
            let candidates = r.forked ? r.active : r.active.prefix(1).map { $0 }
            for s in candidates where s.tokens.count - s.computed > 1 || s.computed == 0 { waiting.append((r, s)) }
        }
        /// Plans a chunk of at most `limit` tokens of `s`'s prompt; returns its size (0: none).
        func prefill(_ r: Request, _ s: Sequence, limit: Int) throws -> Int {
            guard budget > 0, seqBudget > 0 else { return 0 }
            let admitting = !s.inCache
            if admitting {
                let reused = try cache.attachPrefix(sequence: s.cacheID, prompt: s.tokens, adapter: r.spec.adapterKey)
                s.inCache = true
                s.computed = reused
                if s.generated == 0 { s.cachedPrompt = reused }
            }
            let remaining = s.tokens.count - s.computed
            guard remaining >= 1 else { return 0 }
            let chunk = min(remaining, budget, limit)
            // Admission: only what the KV cache can hold now (prefix hits already
            // attached), together with the rows planned so far. The first rows of a
            // step are always tried, so a lone request can run.
            if !plan.rows.isEmpty && !fits(s.cacheID, s.computed + chunk) {
                if admitting {
                    // Not admitted: let go of the attached prefix (its blocks stay cached).
                    cache.remove(sequence: s.cacheID)
                    s.inCache = false
                    s.computed = 0
                }
                return 0
            }
            growth[s.cacheID] = s.computed + chunk
            for k in 0..<chunk {
                let p = s.computed + k
                plan.rows.append(Row(request: r, seq: s, position: p, token: s.tokens[p], logits: p == s.tokens.count - 1))
            }
            plan.requests.insert(r.id)
            budget -= chunk
            seqBudget -= 1
            return chunk
        }
        // Offline: requests come in the prefix tree's order (`ranked`), and one whose
        // shared prefix an admitted request is still computing waits for it (then
        // attaches it from the cache) instead of computing it too.
        var holds = OfflineSchedule.Holds()
        if options.offline {
            for r in all where r.seqs.contains(where: \.inCache) {
                if let s = r.seqs.first(where: { $0.inCache && !$0.finished }) { offline.note(r, computed: s.computed, in: &holds) }
            }
        }
        func admit(_ r: Request, _ s: Sequence, limit: Int) throws -> Int {
            guard options.offline else { return try prefill(r, s, limit: limit) }
            let admitted = r.seqs.contains(where: \.inCache)
            if !admitted && offline.held(r, holds: holds) { return 0 }
            // Admitted now: s.computed is what it attached from the cache.
            let chunk = try prefill(r, s, limit: limit)
            if chunk > 0 && !admitted { offline.note(r, computed: s.computed, in: &holds) }
            return chunk
        }
        // Against head-of-line blocking: prompts whose rest fits in half of the prefill
        // budget go first (in policy order, up to that half), so a waiting short request
        // is admitted — and decodes from the next step — alongside a long prefill's chunks
        // instead of after all of them. The other prefills, in policy order, then take
        // what is left: a long prefill still gets at least half of the prefill budget
        // each step, so a stream of short requests cannot starve it either. (Offline
        // mode schedules the same way: without shared prefixes it is the online order.)
        var shortBudget = budget / 2
        var planned: Set<Sequence> = []
        for (r, s) in waiting where s.tokens.count - s.computed <= shortBudget {
            guard budget > 0, seqBudget > 0, shortBudget > 0 else { break }
            let chunk = try admit(r, s, limit: shortBudget)
            if chunk > 0 { planned.insert(s) }
            shortBudget -= chunk
        }
        for (r, s) in waiting where !planned.contains(s) {
            guard budget > 0, seqBudget > 0 else { break }
            _ = try admit(r, s, limit: .max)
        }
        return plan
    }

    private func run(_ plan: Plan) throws {
        var batch = TokenBatch()
        for row in plan.rows {
            batch.append(row.token, position: row.position, sequence: row.seq.cacheID, logits: row.logits)
        }
        let vocab = model.config.vocabSize
        var logits = [Float](repeating: 0, count: max(1, batch.logitRows) * vocab)
        let adapters = try rowAdapters(plan.rows.map { $0.request.spec })
        try logits.withUnsafeMutableBufferPointer {
            try model.transformer.forward(batch, cache: cache, logits: $0.baseAddress, adapters: adapters,
                                          sharedPrefix: sharedPrefix)
        }
        var done: [Sequence: Int] = [:]
        for row in plan.rows { done[row.seq, default: 0] += 1 }
        for (s, n) in done { s.computed += n }
        let now = Generator.monotonicSeconds()
        var r = 0
        for row in plan.rows where row.logits {
            defer { r += 1 }
            let req = row.request, s = row.seq
            if s.finished { continue }
            try logits.withUnsafeBufferPointer { buf in
                let base = buf.baseAddress! + r * vocab
                if !req.forked && req.spec.n > 1 {
                    // The shared prompt is computed: fork the other samples off it.
                    for other in req.seqs.dropFirst() {
                        try cache.fork(parent: s.cacheID, child: other.cacheID)
                        other.inCache = true
                        other.computed = s.computed
                        other.cachedPrompt = s.cachedPrompt
                    }
                    req.forked = true
                    for other in req.seqs { try sample(req, other, base, now) }
                } else {
                    req.forked = true
                    try sample(req, s, base, now)
                }
            }
        }
    }

    private func sample(_ r: Request, _ s: Sequence, _ logits: UnsafePointer<Float>, _ now: Double) throws {
        let (token, logprob) = try s.sampler.sample(logits: logits, count: model.config.vocabSize, history: s.tokens)
        let isStopToken = r.spec.stopTokens.contains(token)
            || (!r.spec.ignoreEndOfGeneration && model.tokenizer.isEndOfGeneration(token))
        if isStopToken {
            // A stop token ends the sample; it is not output (and not counted).
            finish(r, s, .stop)
            return
        }
        s.generated += 1
        metrics.generatedTokens += 1
        if s.firstTokenTime.isNaN { s.firstTokenTime = now } else { s.gapSum += now - s.lastTokenTime }
        s.lastTokenTime = now
        s.tokens.append(token)
        s.pending += try s.decoder.push(token)
        // Stop strings: emit text up to the earliest match; hold back a possible partial match.
        var out = s.pending
        var hitStop = false
        if !r.spec.stopStrings.isEmpty {
            let all = s.emitted + s.pending
            // A new match must overlap the pending text: search only that tail.
            let longest = r.spec.stopStrings.map(\.count).max() ?? 0
            let from = all.index(all.endIndex, offsetBy: -min(all.count, s.pending.count + longest))
            var cut: String.Index?
            var i = from
            search: while i < all.endIndex {
                for stop in r.spec.stopStrings where !stop.isEmpty && all[i...].hasPrefix(stop) {
                    cut = i
                    break search
                }
                i = all.index(after: i)
            }
            if let cut {
                let keep = all[..<cut]
                out = String(keep.dropFirst(s.emitted.count))
                hitStop = true
            } else {
                var hold = 0
                for stop in r.spec.stopStrings {
                    for k in stride(from: min(stop.count - 1, all.count), through: 1, by: -1) where all.hasSuffix(String(stop.prefix(k))) {
                        hold = max(hold, k)
                        break
                    }
                }
                out = String(s.pending.dropLast(min(hold, s.pending.count)))
            }
        }
        s.emitted += out
        s.pending = hitStop ? "" : String(s.pending.dropFirst(out.count))
        events.append(.token(request: r.id, tag: r.spec.tag, index: s.index, token: token, text: out, logprob: logprob))
        if hitStop { finish(r, s, .stop, stopString: true) } else if s.generated >= r.spec.maxTokens { finish(r, s, .length) }
    }

    private func finish(_ r: Request, _ s: Sequence, _ reason: FinishReason, message: String = "", stopString: Bool = false) {
        guard !s.finished else { return }
        s.finished = true
        // Held-back text (a partial stop-string match that never completed) and any
        // incomplete UTF-8 tail belong to the final text, except after a stop string.
        if !stopString && reason != .cancelled && reason != .error {
            let rest = s.pending + s.decoder.finish()
            if !rest.isEmpty {
                // Streamed text must add up to the final text: flush it as a token event (token -1).
                s.emitted += rest
                events.append(.token(request: r.id, tag: r.spec.tag, index: s.index, token: -1, text: rest, logprob: 0))
            }
        }
        s.pending = ""
        if s.inCache {
            cache.remove(sequence: s.cacheID)
            s.inCache = false
        }
        var m = SequenceMetrics()
        m.promptTokens = r.spec.prompt.count
        m.cachedPromptTokens = s.cachedPrompt
        m.generatedTokens = s.generated
        m.timeToFirstToken = s.firstTokenTime - r.submitTime
        m.meanInterTokenLatency = s.generated > 1 ? s.gapSum / Double(s.generated - 1) : .nan
        m.totalSeconds = Generator.monotonicSeconds() - r.submitTime
        m.preemptions = s.preemptions
        events.append(.finished(request: r.id, tag: r.spec.tag, index: s.index, reason: reason, text: s.emitted, metrics: m,
                                message: message))
        if r.active.isEmpty {
            requests[r.id] = nil
            order.removeAll { $0 == r.id }
            metrics.finished += 1
        }
    }

    /// Finishes every unfinished sample of `r` with an error.
    private func fail(_ r: Request, _ message: String) {
        for s in r.seqs where !s.finished { finish(r, s, .error, message: message) }
    }

    /// The adapters of requests with a sample in the KV cache (running).
    private func runningAdapters() -> Set<ObjectIdentifier> {
        Set(requests.values.compactMap { r in r.spec.adapter.flatMap { a in r.seqs.contains { $0.inCache } ? ObjectIdentifier(a) : nil } })
    }

    private func holdsKV(_ r: Request) -> Bool { r.active.contains { $0.inCache && cache.length(of: $0.cacheID) > 0 } }

    /// Preempts the lowest-priority, latest-arrived request holding KV other than the
    /// top-ranked one. Returns false when there is none (the top request alone does not fit).
    private func preemptLowest() -> Bool {
        let ranking = ranked()
        guard let top = ranking.first else { return false }
        guard let victim = ranking.last(where: { $0.id != top.id && holdsKV($0) }) else { return false }
        preempt(victim)
        return true
    }

    /// Preempts the highest-index sample of `r` that holds KV, when another of its
    /// samples holds KV too (a lone sample that does not fit is not helped by it). The
    /// sample keeps its tokens and its sampler (RNG state included) and is recomputed
    /// later from its prompt plus what it generated, so its text is the one an
    /// unpreempted run gives. Returns false when there is no such sample.
    private func preemptSample(of r: Request) -> Bool {
        guard r.forked else { return false }
        let holding = r.active.filter { $0.inCache && cache.length(of: $0.cacheID) > 0 }
        guard holding.count > 1, let victim = holding.last else { return false }
        cache.remove(sequence: victim.cacheID)
        victim.inCache = false
        victim.computed = 0
        victim.preemptions += 1
        metrics.preemptions += 1
        return true
    }

    private func preempt(_ r: Request) {
        for s in r.active where s.inCache {
            cache.remove(sequence: s.cacheID)
            s.inCache = false
            s.computed = 0
            s.preemptions += 1
        }
        // Recompute each sample on its own (the prompt's blocks are likely still cached).
        r.forked = true
        metrics.preemptions += 1
    }

    /// Current engine metrics (KV use and queue depth refreshed now).
    package func currentMetrics() -> EngineMetrics {
        refreshMetrics()
        return metrics
    }

    private func refreshMetrics() {
        let st = cache.stats()
        metrics.kvUsedBytes = st.bytesUsed
        metrics.kvTotalBytes = st.bytesTotal
        metrics.prefixHitRate = st.hitRate
        metrics.adapterResidentBytes = adapterResidency.residentBytes
        metrics.adapterLoads = adapterResidency.loads
        metrics.adapterEvictions = adapterResidency.evictions
        metrics.sharedPrefixRows = sharedPrefix.rows
        metrics.attentionPositions = sharedPrefix.positions
        metrics.sharedPrefixPositionsSaved = sharedPrefix.positionsSaved
        metrics.sharedPrefixFallbacks = sharedPrefix.fallbacks
        metrics.waiting = requests.values.filter { r in r.active.allSatisfy { $0.computed == 0 } }.count
        metrics.running = requests.count - metrics.waiting
    }
}

extension Engine.Sequence: Hashable {
    static func == (a: Engine.Sequence, b: Engine.Sequence) -> Bool { a === b }
    func hash(into h: inout Hasher) { h.combine(ObjectIdentifier(self)) }
}
