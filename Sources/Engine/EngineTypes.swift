import BCModel

/// One generation request.
package struct GenerationRequest: Sendable {
    package var prompt: [Int32]
    package var sampling: SamplingParams
    package var maxTokens: Int
    /// Extra token ids that end a sequence (the model's end-of-generation tokens always
    /// do unless `ignoreEndOfGeneration`).
    package var stopTokens: Set<Int32>
    /// Text that ends a sequence; the stop string itself is not emitted.
    package var stopStrings: [String]
    /// Higher runs first under the priority policy and is preempted last.
    package var priority: Int
    /// Parallel samples sharing the prompt's KV (forked copy-on-write).
    package var n: Int
    package var ignoreEndOfGeneration: Bool
    /// Caller's opaque tag, carried by every event of this request (the engine keeps
    /// it only inside the request, so it lives and dies with it).
    package var tag: UInt64
    /// The serving adapter the request runs with (nil: the base model) and the factor
    /// applied on top of the adapter's own scale. The request holds the adapter alive.
    package var adapter: ServingAdapter?
    package var adapterScale: Float

    package init(prompt: [Int32], sampling: SamplingParams = .greedy, maxTokens: Int = 128, stopTokens: Set<Int32> = [],
                stopStrings: [String] = [], priority: Int = 0, n: Int = 1, ignoreEndOfGeneration: Bool = false, tag: UInt64 = 0,
                adapter: ServingAdapter? = nil, adapterScale: Float = 1) {
        self.prompt = prompt
        self.sampling = sampling
        self.maxTokens = maxTokens
        self.stopTokens = stopTokens
        self.stopStrings = stopStrings
        self.priority = priority
        self.n = n
        self.ignoreEndOfGeneration = ignoreEndOfGeneration
        self.tag = tag
        self.adapter = adapter
        self.adapterScale = adapterScale
    }

    /// The prefix-cache key of the request's adapter (0: the base model).
    package var adapterKey: UInt64 { adapter?.cacheKey(scale: adapterScale) ?? 0 }
}

package enum FinishReason: Int32, Sendable {
    case length = 0
    case stop = 1
    case cancelled = 2
    case error = 3

    package var name: String {
        switch self {
        case .length: "length"
        case .stop: "stop"
        case .cancelled: "cancelled"
        case .error: "error"
        }
    }
}

/// Per-sequence timings and counts, reported with its finished event.
package struct SequenceMetrics: Sendable, Equatable {
    package var promptTokens = 0
    package var cachedPromptTokens = 0
    package var generatedTokens = 0
    /// Seconds from submission to the first token (NaN when none was generated).
    package var timeToFirstToken = Double.nan
    /// Mean seconds between consecutive tokens (NaN with fewer than two).
    package var meanInterTokenLatency = Double.nan
    package var totalSeconds = 0.0
    package var preemptions = 0
}

/// What `Engine.poll` reports. `tag` is the request's `GenerationRequest.tag`.
package enum EngineEvent: Sendable {
    case token(request: UInt64, tag: UInt64, index: Int, token: Int32, text: String, logprob: Float)
    case finished(request: UInt64, tag: UInt64, index: Int, reason: FinishReason, text: String, metrics: SequenceMetrics,
                  message: String)
}

package enum SchedulingPolicy: Int32, Sendable {
    case fcfs = 0
    case priority = 1
}

package struct EngineOptions: Sendable {
    /// Tokens per step (decode tokens + prefill chunks).
    package var maxBatchedTokens = 512
    /// Sequences decoding in one step.
    package var maxSequences = 64
    package var policy = SchedulingPolicy.fcfs
    /// Static batching (for comparison benchmarks): admit a group of up to
    /// `maxSequences` requests only when no request is running.
    package var staticBatching = false
    /// Bytes of serving-adapter weights kept resident (`AdapterResidency`); 0 = unlimited.
    package var adapterBytes = 0
    /// Offline batch mode (`OfflineSchedule`): requests run in a prefix tree's order, each
    /// shared prefix is prefilled once before the requests sharing it are admitted, and
    /// prefill chunks take the budget decodes leave in that order (no short-prompt pass).
    /// Excludes `staticBatching`.
    package var offline = false
    /// Shared-prefix attention (`SharedPrefixAttention`): rows whose sequences share KV
    /// blocks read them once per step. Off (default): every row reads its own, bit for
    /// bit batch invariant.
    package var sharedPrefixAttention = false

    package init(maxBatchedTokens: Int = 512, maxSequences: Int = 64, policy: SchedulingPolicy = .fcfs,
                staticBatching: Bool = false, adapterBytes: Int = 0, offline: Bool = false,
                sharedPrefixAttention: Bool = false) {
        self.maxBatchedTokens = maxBatchedTokens
        self.maxSequences = maxSequences
        self.policy = policy
        self.staticBatching = staticBatching
        self.adapterBytes = adapterBytes
        self.offline = offline
        self.sharedPrefixAttention = sharedPrefixAttention
    }
}

/// Engine-wide counters.
package struct EngineMetrics: Sendable, Equatable {
    package var steps = 0
    package var submitted = 0
    package var finished = 0
    package var waiting = 0
    package var running = 0
    package var preemptions = 0
    package var promptTokens = 0
    package var generatedTokens = 0
    package var batchedTokens = 0
    package var busySeconds = 0.0
    package var kvUsedBytes = 0
    package var kvTotalBytes = 0
    package var prefixHitRate = 0.0
    /// Resident bytes of the adapters this engine tracks; its reloads and evictions.
    package var adapterResidentBytes = 0
    package var adapterLoads = 0
    package var adapterEvictions = 0
    /// Shared-prefix attention, in (row, layer) units (see `SharedPrefixAttention`): rows
    /// that read a shared prefix with others, the positions all rows attend to, the ones
    /// read once for several rows instead of per row, rows that could not share.
    package var sharedPrefixRows = 0
    package var attentionPositions = 0
    package var sharedPrefixPositionsSaved = 0
    package var sharedPrefixFallbacks = 0
    package var tokensPerSecond: Double { busySeconds > 0 ? Double(generatedTokens) / busySeconds : 0 }
}
