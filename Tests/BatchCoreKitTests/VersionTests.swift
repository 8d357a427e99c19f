import BCCore
import Foundation
import Testing

@Suite struct VersionTests {
    /// The Swift constants and the header's macros are one version.
    @Test func headerMacrosMatchCore() throws {
        let header = try String(contentsOfFile: Repo.path("include/batchcore.h"), encoding: .utf8)
        func macro(_ name: String) -> String? {
            header.split(separator: "\n").first { $0.hasPrefix("#define \(name) ") }
                .map { $0.dropFirst("#define \(name) ".count).trimmingCharacters(in: .whitespaces) }
        }
        #expect(macro("BC_VERSION_MAJOR") == "\(BatchCoreVersion.major)")
        #expect(macro("BC_VERSION_MINOR") == "\(BatchCoreVersion.minor)")
        #expect(macro("BC_VERSION_PATCH") == "\(BatchCoreVersion.patch)")
        #expect(macro("BC_VERSION_STRING") == "\"\(BatchCoreVersion.string)\"")
        #expect(macro("BC_ABI_VERSION") == "\(BatchCoreVersion.abi)")
    }

    @Test func errorKindsMatchStatusCodes() throws {
        let header = try String(contentsOfFile: Repo.path("include/batchcore.h"), encoding: .utf8)
        let pairs: [(String, BatchCoreError.Kind)] = [
            ("BC_E_INVALID_ARGUMENT", .invalidArgument), ("BC_E_IO", .io), ("BC_E_FORMAT", .format),
            ("BC_E_UNSUPPORTED", .unsupported), ("BC_E_OUT_OF_MEMORY", .outOfMemory), ("BC_E_KV_FULL", .kvFull),
            ("BC_E_BAD_STATE", .badState), ("BC_E_CANCELLED", .cancelled), ("BC_E_NON_FINITE", .nonFinite),
            ("BC_E_NOT_FOUND", .notFound), ("BC_E_INTERNAL", .internal),
        ]
        for (name, kind) in pairs {
            #expect(header.contains("\(name) = \(kind.rawValue),") || header.contains("\(name) = \(kind.rawValue) "),
                    "\(name) must be \(kind.rawValue)")
        }
    }
}
