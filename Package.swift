// swift-tools-version:6.1
import PackageDescription

// Flags for the numeric core: baseline x86-64 has no FMA, so hot loops would call
// libm per lane. batchcore targets x86-64-v3 (AVX2 + FMA) CPUs.
let simdFlags: [SwiftSetting] = [.unsafeFlags(["-Xcc", "-mavx2", "-Xcc", "-mfma", "-Xcc", "-mf16c"])]

let package = Package(
    name: "batchcore",
    products: [
        // The one shared object C callers link: libbatchcore.so (installed as .so.0).
        .library(name: "batchcore", type: .dynamic, targets: ["BatchCore"]),
    ],
    targets: [
        // The public C header, imported by Swift so every exported function is
        // checked against its prototype (@c @implementation).
        .target(name: "CBatchCore", path: "include", publicHeadersPath: "."),
        // Inline helpers the core needs from C (header-only).
        .target(name: "CSupport", path: "Sources/CSupport", publicHeadersPath: "include"),
        // The core: plain Swift, knows nothing of C callers.
        .target(name: "BatchCoreKit", dependencies: ["CSupport"], swiftSettings: simdFlags),
        // The ABI layer: only bc_* functions; validates, converts, forwards.
        .target(
            name: "BatchCore", dependencies: ["BatchCoreKit", "CBatchCore"],
            exclude: ["exports.map"],
            linkerSettings: [
                .unsafeFlags([
                    "-static-stdlib", "-use-ld=lld",
                    "-Xlinker", "--version-script=Sources/BatchCore/exports.map",
                    "-Xlinker", "-soname=libbatchcore.so.2",
                ])
            ]),
        .testTarget(name: "BatchCoreKitTests", dependencies: ["BatchCoreKit"]),
    ],
    // Language mode 5: the numeric core hands raw buffers to worker threads, which
    // Swift 6's strict Sendable checking cannot express without copies.
    swiftLanguageModes: [.v5]
)
