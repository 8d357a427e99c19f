import BCCore
import BCModel

extension Engine {
    /// Each planned row's serving adapter (its request's), grouped for the forward
    /// (`BatchAdapters`); nil when no row has one. Rows of different adapters and of
    /// none share the step's base products; each group's low-rank updates touch only
    /// its rows, so a request's tokens do not depend on its batch-mates' adapters.
    func rowAdapters(_ specs: [GenerationRequest]) throws -> BatchAdapters? {
        guard specs.contains(where: { $0.adapter != nil }) else { return nil }
        return try BatchAdapters(perRow: specs.map { s in s.adapter.map { ($0, s.adapterScale) } }, model: model)
    }
}
