/// Library version. Must agree with BC_VERSION_* and BC_ABI_VERSION in
/// include/batchcore.h (a test checks it).
package enum BatchCoreVersion {
    package static let major = 0
    package static let minor = 1
    package static let patch = 0
    package static let string = "\(major).\(minor).\(patch)"
    package static let abi: UInt32 = 2
}
