/// One named tensor of a model as a trainer sees it: the GGUF name, the row-major shape
/// and where its values live. Stacked projections (q | k | v, gate | up) are listed as
/// their parts; a part is a contiguous run of rows of its `Linear`, so its values and
/// gradient are contiguous slices of that Linear's trainable copy.
package struct ModelParameter {
    /// Where a parameter's values live.
    package enum Storage {
        /// A whole vector (norm gain).
        case vector(WeightVector)
        /// Rows `first ..< first + shape[0]` of a projection (all columns).
        case rows(Linear, first: Int)
        /// A LoRA adapter's A [rank × cols] (`isB` false) or B [rows × rank] (true).
        case adapter(LoRASlot, isB: Bool)
    }

    /// The GGUF tensor name (`blk.0.attn_q.weight`, ...; `LlamaTensorNames`).
    package let name: String
    /// Row-major shape, outermost first: [rows, cols] for a matrix, [count] for a vector.
    package let shape: [Int]
    package let storage: Storage

    /// Number of values.
    package var count: Int { shape.reduce(1, *) }

    /// The float32 values (row-major `count` floats): the vector itself, or the rows of
    /// the projection's trainable copy — nil while that projection is not trainable
    /// (`Linear.makeTrainable`). A change to a projection's values takes effect in
    /// products after `Linear.syncPacked()`. An adapter's A or B is used as it is.
    package var values: UnsafeMutablePointer<Float>? {
        switch storage {
        case .vector(let v): return v.data
        case .rows(let m, let first): return m.weight.map { $0 + first * m.cols }
        case .adapter(let s, let isB): return isB ? s.b : s.a
        }
    }

    /// The gradient (`count` floats, laid out as `values`); nil while not trainable.
    package var gradient: UnsafeMutablePointer<Float>? {
        switch storage {
        case .vector(let v): return v.grad
        case .rows(let m, let first): return m.grad.map { $0 + first * m.cols }
        case .adapter(let s, let isB): return isB ? s.gradB : s.gradA
        }
    }
}
