/// Shared-prefix attention (Hydragen) of serving passes: whether it runs, and what it
/// did. Rows of one forward pass whose sequences point at the same physical KV blocks
/// (prefix-cache hits, forks, n > 1 samples: found from the cache's segments, no hint
/// from the caller) read those blocks once for all of them (`Transformer.attendShared`).
///
/// Counters are in (row, layer) units — one query row's attention in one layer — and
/// accumulate over every pass given this object. Touched only by the thread running the
/// pass (before and after its parallel jobs), so one object per engine or context.
package final class SharedPrefixAttention: @unchecked Sendable {
    /// false: every row reads its own keys/values (the per-row path, bit for bit: exact
    /// batch invariance). Off by default: a merged result differs from the per-row one in
    /// the last bits, and a model whose projections quantize activations (native Q8_0 /
    /// Q4_x weights: int8 per block of 32) can turn a 1-ulp change into a different int8
    /// code — measured on SmolLM2-135M Q4_1 with random tokens, a 1-ulp change of layer
    /// 0's values moves the logits by 3e-2 relative (float32 weights: ~1e-6). So on
    /// native quantized weights it is a throughput option, not batch invariant.
    package var enabled: Bool
    /// Floats the shared parts of one layer's attention may take (the parts' outputs and
    /// statistics; for a quantized cache, also the decoded runs): a layer needing more
    /// computes its rows per row (counted in `fallbacks`). Default 2^26 (256 MB).
    package var maxPartFloats = 1 << 26
    /// Rows per job of a shared run, at most (`Transformer.attendShared`): each job reads
    /// its split of the run once for all its rows. Shapes the work only: a row's bits do
    /// not depend on it. Values below 1 count as 1.
    package var rowsPerJob = 32
    /// Positions per split of a shared run (cut at absolute multiples): each split of each
    /// block of rows is its own job and part. Changes a sharing row's last bits (another
    /// cut of its softmax), never with the thread count. Values below 1 count as 1.
    package var splitPositions = 512
    /// (row, layer) pairs whose attention read a shared prefix together with other rows.
    package private(set) var rows = 0
    /// Key/value positions all rows would have read on their own, Σ over (row, layer) of
    /// the positions the row attends to.
    package private(set) var positions = 0
    /// Of `positions`, the ones not read because a shared run was read once for several
    /// rows: Σ over shared runs and kv-head jobs of (positions its rows read − positions read).
    package private(set) var positionsSaved = 0
    /// (row, layer) pairs whose sequence shares physical blocks with another sequence of
    /// the pass but read its own keys/values all the same: the buffers of the shared
    /// parts (or of a quantized cache's decoded runs) exceed `maxPartFloats` or could not
    /// be allocated.
    package private(set) var fallbacks = 0

    package init(enabled: Bool) { self.enabled = enabled }

    func count(rows r: Int, positions p: Int, saved s: Int) {
        rows += r
        positions += p
        positionsSaved += s
    }

    func countFallbacks(_ n: Int, positions p: Int) {
        fallbacks += n
        positions += p
    }

    func countPositions(_ p: Int) { positions += p }
}
