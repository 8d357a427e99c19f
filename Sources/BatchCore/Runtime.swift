import BCCore
import CBatchCore

@c @implementation
public func bc_set_num_threads(_ n: Int32) -> bc_status {
    abiCall { try Parallel.setThreadCount(Int(n)) }
}

@c @implementation
public func bc_get_num_threads() -> Int32 {
    Int32(clamping: Parallel.threadCount)
}
