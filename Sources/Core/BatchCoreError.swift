/// The one error type the core throws. `kind` maps 1:1 onto the C ABI's bc_status
/// codes; `message` is what a caller reads from bc_last_error().
package struct BatchCoreError: Error, CustomStringConvertible, Equatable {
    package enum Kind: Int32, Sendable {
        case invalidArgument = 1
        case io = 2
        case format = 3
        case unsupported = 4
        case outOfMemory = 5
        case kvFull = 6
        case badState = 7
        case cancelled = 8
        case nonFinite = 9
        case notFound = 10
        case `internal` = 11
    }

    package let kind: Kind
    package let message: String

    package init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    package var description: String { message }

    package static func invalid(_ message: String) -> BatchCoreError { .init(.invalidArgument, message) }
    package static func format(_ message: String) -> BatchCoreError { .init(.format, message) }
    package static func io(_ message: String) -> BatchCoreError { .init(.io, message) }
    package static func badState(_ message: String) -> BatchCoreError { .init(.badState, message) }
}
