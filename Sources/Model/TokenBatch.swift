/// A flattened batch of tokens from one or more sequences: token i is `tokens[i]`
/// at `positions[i]` of sequence `sequences[i]`; logits are produced for the tokens
/// whose `wantLogits` is true, in batch order. Each sequence's tokens must continue
/// its cached positions in order (cache length, length+1, ...).
package struct TokenBatch {
    package var tokens: [Int32]
    package var positions: [Int]
    package var sequences: [Int]
    package var wantLogits: [Bool]

    package init(tokens: [Int32] = [], positions: [Int] = [], sequences: [Int] = [], wantLogits: [Bool] = []) {
        self.tokens = tokens
        self.positions = positions
        self.sequences = sequences
        self.wantLogits = wantLogits
    }

    package var count: Int { tokens.count }
    package var logitRows: Int { wantLogits.lazy.filter { $0 }.count }

    package mutating func append(_ token: Int32, position: Int, sequence: Int, logits: Bool) {
        tokens.append(token)
        positions.append(position)
        sequences.append(sequence)
        wantLogits.append(logits)
    }
}
