import BCKernels

/// One query row of attention: batch row `row` at `position` of its sequence or
/// document reads the keys/values of view `view` of an `AttentionWork`.
struct AttentionRow {
    let row: Int
    let view: Int
    let position: Int
    /// The first row of its sequence in the batch: its keys/values are likely cold, so
    /// the kernel requests them up front (`Attention.group`'s prefetchRows).
    let first: Bool
}

/// What the attention of one layer reads: the views and the rows reading them. The
/// views are valid for the duration of the `KVSource.read` callback only.
struct AttentionWork {
    var views: [KVView]
    var rows: [AttentionRow]
    /// A query at position p sees positions > p - window (sliding-window KV layouts), or all.
    var window: Int?
    /// Shared-prefix attention (`Transformer.attendShared`) and its counters; nil: off
    /// (the cache-free training pass, whose documents share no memory).
    var sharedPrefix: SharedPrefixAttention? = nil
}

/// Where the attention block finds keys/values and puts the batch's new ones. The layer
/// math knows nothing else about a KV cache: `ServingKV` writes into and reads from a
/// `KVCache`; `SelfContainedKV` (training, no cache) reads the batch's own rows in place.
protocol KVSource: AnyObject {
    /// Makes the batch's keys/values of `layer` readable: `qkv` [T × rowStride] holds the
    /// batch's rows q | k | v after RoPE (k at column d, v at column d + kvd). Called once
    /// per layer, after the QKV projection and before `read`.
    func store(layer: Int, qkv: UnsafePointer<Float>, rowStride: Int) throws

    /// Calls `body` with the work of `layer`'s attention: once for the whole batch, or
    /// once per group of rows when the views of different groups cannot be valid at the
    /// same time (a cache decoding into one shared scratch). Views are gathered before
    /// `body` runs, so a failed gather throws before any attention is computed.
    func read(layer: Int, qkv: UnsafePointer<Float>, rowStride: Int, _ body: (AttentionWork) -> Void) throws
}
