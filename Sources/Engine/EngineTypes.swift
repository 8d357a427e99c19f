/// One generation request.
public struct GenerationRequest: Sendable {
    public var prompt: [Int32]
    public var sampling: SamplingParams
    public var maxTokens: Int
    /// Extra token ids that end a sequence (the model's end-of-generation tokens always
    /// do unless `ignoreEndOfGeneration`).
    public var stopTokens: Set<Int32>
    /// Text that ends a sequence; the stop string itself is not emitted.
    public var stopStrings: [String]
    /// Higher runs first under the priority policy and is preempted last.
    public var priority: Int
    /// Parallel samples sharing the prompt's KV (forked copy-on-write).
    public var n: Int
    public var ignoreEndOfGeneration: Bool
    /// Caller's opaque tag, carried by every event of this request (the engine keeps
    /// it only inside the request, so it lives and dies with it).
    public var tag: UInt64

    public init(prompt: [Int32], sampling: SamplingParams = .greedy, maxTokens: Int = 128, stopTokens: Set<Int32> = [],
                stopStrings: [String] = [], priority: Int = 0, n: Int = 1, ignoreEndOfGeneration: Bool = false, tag: UInt64 = 0) {
        self.prompt = prompt
        self.sampling = sampling
        self.maxTokens = maxTokens
        self.stopTokens = stopTokens
        self.stopStrings = stopStrings
        self.priority = priority
        self.n = n
        self.ignoreEndOfGeneration = ignoreEndOfGeneration
        self.tag = tag
    }
}

public enum FinishReason: Int32, Sendable {
    case length = 0
    case stop = 1
    case cancelled = 2
    case error = 3

    public var name: String {
        switch self {
        case .length: "length"
        case .stop: "stop"
        case .cancelled: "cancelled"
        case .error: "error"
        }
    }
}

/// Per-sequence timings and counts, reported with its finished event.
public struct SequenceMetrics: Sendable, Equatable {
    public var promptTokens = 0
    public var cachedPromptTokens = 0
    public var generatedTokens = 0
    /// Seconds from submission to the first token (NaN when none was generated).
    public var timeToFirstToken = Double.nan
    /// Mean seconds between consecutive tokens (NaN with fewer than two).
    public var meanInterTokenLatency = Double.nan
    public var totalSeconds = 0.0
    public var preemptions = 0
}

/// What `Engine.poll` reports. `tag` is the request's `GenerationRequest.tag`.
public enum EngineEvent: Sendable {
    case token(request: UInt64, tag: UInt64, index: Int, token: Int32, text: String, logprob: Float)
    case finished(request: UInt64, tag: UInt64, index: Int, reason: FinishReason, text: String, metrics: SequenceMetrics,
                  message: String)
}

public enum SchedulingPolicy: Int32, Sendable {
    case fcfs = 0
    case priority = 1
}

public struct EngineOptions: Sendable {
    /// Tokens per step (decode tokens + prefill chunks).
    public var maxBatchedTokens = 512
    /// Sequences decoding in one step.
    public var maxSequences = 64
    public var policy = SchedulingPolicy.fcfs
    /// Static batching (for comparison benchmarks): admit a group of up to
    /// `maxSequences` requests only when no request is running.
    public var staticBatching = false

    public init(maxBatchedTokens: Int = 512, maxSequences: Int = 64, policy: SchedulingPolicy = .fcfs,
                staticBatching: Bool = false) {
        self.maxBatchedTokens = maxBatchedTokens
        self.maxSequences = maxSequences
        self.policy = policy
        self.staticBatching = staticBatching
    }
}

/// Engine-wide counters.
public struct EngineMetrics: Sendable, Equatable {
    public var steps = 0
    public var submitted = 0
    public var finished = 0
    public var waiting = 0
    public var running = 0
    public var preemptions = 0
    public var promptTokens = 0
    public var generatedTokens = 0
    public var batchedTokens = 0
    public var busySeconds = 0.0
    public var kvUsedBytes = 0
    public var kvTotalBytes = 0
    public var prefixHitRate = 0.0
    public var tokensPerSecond: Double { busySeconds > 0 ? Double(generatedTokens) / busySeconds : 0 }
}
