// swift-tools-version:6.1
import PackageDescription

// Flags for the numeric core: baseline x86-64 has no FMA, so hot loops would call
// libm per lane. batchcore targets x86-64-v3 (AVX2 + FMA) CPUs.
let simdFlags: [SwiftSetting] = [.unsafeFlags(["-Xcc", "-mavx2", "-Xcc", "-mfma", "-Xcc", "-mf16c"])]

/// A subsystem of the core: folder Sources/<folder>, module BC<folder>. Dependencies
/// point down the graph in ARCHITECTURE.md only; SwiftPM rejects a cycle.
func subsystem(_ folder: String, _ deps: [Target.Dependency], swift6: Bool = false) -> Target {
    .target(name: "BC" + folder, dependencies: deps, path: "Sources/" + folder,
            swiftSettings: simdFlags + (swift6 ? [.swiftLanguageMode(.v6)] : [.swiftLanguageMode(.v5)]))
}

let package = Package(
    name: "batchcore",
    products: [
        // The one shared object C callers link: libbatchcore.so (installed as .so.2, the ABI number).
        .library(name: "batchcore", type: .dynamic, targets: ["BatchCore"]),
    ],
    targets: [
        // The public C header, imported by Swift so every exported function is
        // checked against its prototype (@c @implementation).
        .target(name: "CBatchCore", path: "include", publicHeadersPath: "."),
        // Inline helpers the core needs from C (header-only).
        .target(name: "CSupport", path: "Sources/CSupport", publicHeadersPath: "include"),
        // The core, bottom to top: plain Swift, knows nothing of C callers.
        subsystem("Core", ["CSupport"], swift6: true),
        subsystem("Kernels", ["BCCore", "CSupport"], swift6: true),
        subsystem("Formats", ["BCCore", "BCKernels"], swift6: true),
        subsystem("Tokenizer", ["BCCore", "BCFormats"], swift6: true),
        subsystem("KV", ["BCCore", "BCKernels"], swift6: true),
        subsystem("Model", ["BCCore", "BCKernels", "BCFormats", "BCTokenizer", "BCKV"], swift6: true),
        subsystem("Optim", ["BCCore", "BCKernels"], swift6: true),
        subsystem("Engine", ["BCCore", "BCKV", "BCModel", "BCTokenizer"], swift6: true),
        // Training: data loading, micro-batch packing (and the trainer).
        subsystem("Train", ["BCCore", "BCFormats", "BCTokenizer", "BCModel"], swift6: true),
        // The ABI layer: only bc_* functions; validates, converts, forwards.
        .target(
            name: "BatchCore",
            dependencies: ["CBatchCore", "BCCore", "BCKernels", "BCFormats", "BCTokenizer", "BCKV", "BCModel",
                           "BCOptim", "BCEngine", "BCTrain"],
            exclude: ["exports.map"],
            swiftSettings: [.swiftLanguageMode(.v6)],
            linkerSettings: [
                .unsafeFlags([
                    "-static-stdlib", "-use-ld=lld",
                    "-Xlinker", "--version-script=Sources/BatchCore/exports.map",
                    "-Xlinker", "-soname=libbatchcore.so.2",
                ])
            ]),
        .testTarget(name: "BatchCoreKitTests",
                    dependencies: ["BCCore", "BCKernels", "BCFormats", "BCTokenizer", "BCKV", "BCModel", "BCOptim",
                                   "BCEngine", "BCTrain"],
                    swiftSettings: [.swiftLanguageMode(.v6)]),
    ]
)
