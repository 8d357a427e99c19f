import BCCore
import BCTrain
import CBatchCore

/// bc_collectives → TrainerCollectives: the caller's C callbacks wrapped as throwing
/// closures (non-zero return = error).

private var defaultCollectives: bc_collectives {
    bc_collectives(struct_size: UInt32(MemoryLayout<bc_collectives>.size), rank: 0, world_size: 1, reserved0: 0,
                   allreduce_sum_f32: nil, broadcast: nil, user: nil)
}

@c @implementation
public func bc_collectives_default(_ out: UnsafeMutablePointer<bc_collectives>?, _ size: Int) -> bc_status {
    abiCall { try writeDefault(defaultCollectives, out, size, "bc_collectives") }
}

@c @implementation
public func bc_trainer_set_collectives(_ trainer: OpaquePointer?, _ c: UnsafePointer<bc_collectives>?) -> bc_status {
    abiCall {
        let t = try object(trainer, as: TrainerHandle.self, "trainer")
        guard let c else { try t.trainer.setCollectives(nil); return }
        // Every field up to `user` is required (no default callback).
        let p = try readParams(c, defaults: defaultCollectives, "bc_collectives",
                               minimumSize: MemoryLayout<bc_collectives>.size)
        guard p.reserved0 == 0 else { throw BatchCoreError.invalid("bc_collectives.reserved0 must be 0") }
        let reduce = try required(p.allreduce_sum_f32, "c->allreduce_sum_f32")
        let bcast = try required(p.broadcast, "c->broadcast")
        guard Trainer.bucketFloats == Int(BC_ALLREDUCE_BUCKET_FLOATS) else {
            throw BatchCoreError(.internal, "the bucket size differs from BC_ALLREDUCE_BUCKET_FLOATS")
        }
        let user = p.user
        let collectives = TrainerCollectives(
            rank: Int(p.rank), worldSize: Int(p.world_size),
            allReduceSum: { buffer, n in
                let rc = reduce(buffer, n, user)
                guard rc == 0 else { throw BatchCoreError(.io, "allreduce_sum_f32 returned \(rc)") }
            },
            broadcast: { buffer, bytes, root in
                let rc = bcast(buffer, bytes, Int32(root), user)
                guard rc == 0 else { throw BatchCoreError(.io, "broadcast returned \(rc)") }
            })
        try t.trainer.setCollectives(collectives)
    }
}
