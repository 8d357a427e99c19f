/// Library version. Must agree with BC_VERSION_* and BC_ABI_VERSION in
/// include/batchcore.h (a test checks it).
public enum BatchCoreVersion {
    public static let major = 0
    public static let minor = 1
    public static let patch = 0
    public static let string = "\(major).\(minor).\(patch)"
    public static let abi: UInt32 = 2
}
