/// The keys and values one attention query row may read: runs of positions (`KVSegment`,
/// ascending, not overlapping), each run's rows `rowStride` floats apart. The view does
/// not own the memory and does not know where it lives: blocks of a KV cache
/// (rowStride = kvDim, one run per block) or the batch's own keys/values inside a
/// training pass's qkv activations (rowStride = d + 2·kvDim, one run per document).
/// Valid as long as the memory its runs point at.
package struct KVView {
    package var segments: [KVSegment]
    /// Floats from one position's key (value) row to the next position's, in every run.
    package let rowStride: Int

    package init(segments: [KVSegment], rowStride: Int) {
        self.segments = segments
        self.rowStride = rowStride
    }
}
