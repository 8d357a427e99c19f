import BCCore

/// Runs `body(range)` for the fixed blocks of `block` consecutive rows of 0..<rows on
/// the worker threads (`Parallel.forEach`). The training kernels use it only for work
/// whose rows are independent, so neither the thread count nor the block size changes a
/// result bit.
@inline(__always)
package func forEachRowBlock(_ rows: Int, block: Int, _ body: (Range<Int>) -> Void) {
    if rows <= 0 { return }
    let blocks = (rows + block - 1) / block
    Parallel.forEach(blocks) { b in body(b * block..<min(rows, (b + 1) * block)) }
}
