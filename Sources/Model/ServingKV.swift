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

    init(batch: TokenBatch, cache: KVCache, config c: ModelConfig) throws {
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

    /// One parallel job over all sequences when their segments can be gathered first; a
    /// cache decoding into shared scratch is read one sequence at a time.
    func read(layer: Int, qkv: UnsafePointer<Float>, rowStride: Int, _ body: (AttentionWork) -> Void) throws {
        let window = cache.window(layer: layer)
        if cache.segmentsStayValid {
            var views: [KVView] = []
            views.reserveCapacity(order.count)
            for k in order.indices { views.append(try gather(layer: layer, k)) }
            body(AttentionWork(views: views, rows: allRows, window: window))
        } else {
            for k in order.indices {
                body(AttentionWork(views: [try gather(layer: layer, k)], rows: rowsBySequence[k], window: window))
            }
        }
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
