/// The one error type the core throws. `kind` maps 1:1 onto the C ABI's bc_status
/// codes; `message` is what a caller reads from bc_last_error().
public struct BatchCoreError: Error, CustomStringConvertible, Equatable {
    public enum Kind: Int32, Sendable {
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

    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    public static func invalid(_ message: String) -> BatchCoreError { .init(.invalidArgument, message) }
    public static func format(_ message: String) -> BatchCoreError { .init(.format, message) }
    public static func io(_ message: String) -> BatchCoreError { .init(.io, message) }
    public static func badState(_ message: String) -> BatchCoreError { .init(.badState, message) }
}
