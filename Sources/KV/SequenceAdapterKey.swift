import BCCore
/// The adapter key of a cached sequence: KV computed under one adapter (and scale) is
/// named in the prefix index under that key only, so it is never reused under another
/// (`PrefixIndex.blockHash`). 0 is the base model.
extension PagedKVCache {
    /// The key sequence `sequence` was computed under; nil when the cache does not hold it.
    package func adapterKey(of sequence: Int) -> UInt64? { sequenceRecord(sequence)?.adapter }

    /// Sets the key of a held sequence that has no positions yet (length 0). Throws
    /// `.badState` for a sequence with positions and `.notFound` for one not held.
    package func setAdapterKey(_ key: UInt64, of sequence: Int) throws {
        guard let seq = sequenceRecord(sequence) else { throw BatchCoreError(.notFound, "no sequence \(sequence)") }
        guard seq.length == 0, seq.tokens.isEmpty else {
            throw BatchCoreError.badState("sequence \(sequence) already holds positions computed under another adapter")
        }
        seq.adapter = key
    }
}
