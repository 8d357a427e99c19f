/// The optimizer algorithms. Raw values are the C ABI's bc_optim_algorithm codes.
package enum OptimizerAlgorithm: UInt32, CaseIterable, Sendable {
    case sgd = 1
    case adam = 2
    case adamw = 3
    case adagrad = 4
    case rmsprop = 5
    case lamb = 6
    case lion = 7
    case adaptiveBraking = 8

    package var name: String {
        switch self {
        case .sgd: "sgd"
        case .adam: "adam"
        case .adamw: "adamw"
        case .adagrad: "adagrad"
        case .rmsprop: "rmsprop"
        case .lamb: "lamb"
        case .lion: "lion"
        case .adaptiveBraking: "adabrake"
        }
    }

    package init?(name: String) {
        guard let a = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = a
    }
}
