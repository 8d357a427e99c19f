import BCCore
import BCFormats
import BCModel
import BCOptim
#if canImport(Glibc)
import Glibc
#endif

/// A checkpoint directory: everything a resumed run needs to continue bit-identically.
///
///     weights.safetensors   every trainable tensor, F32, GGUF names, our row layout (exact bits)
///     optimizer.state       the optimizer's state file (`Optimizer.saveState`), when given
///     delayed.safetensors   gradient delay: the FIFO's gradients, oldest first (TrainerDelay.swift)
///     trainer.json          format/version, step, step calls (LoRA dropout masks), tokens, the data's seed/epochs/position and
///                           fingerprint (examples, tokens, targets), micro-batch options
///
/// The directory is replaced as a whole: written beside it, then renamed into place.
extension Trainer {
    package static let checkpointFormat = "batchcore-trainer-checkpoint"

    /// Writes the checkpoint to `dir` (created or replaced). Data-parallel: only rank 0
    /// writes (every rank holds the same state); other ranks return without writing.
    package func saveCheckpoint(_ dir: String, optimizer: Optimizer?) throws {
        guard rank == 0 else { return }
        try prepareTraining()
        let tmp = dir + ".tmp-\(getpid())"
        try? removeDirectory(tmp)
        guard mkdir(tmp, 0o755) == 0 else { throw BatchCoreError.io("cannot create \(tmp): \(String(cString: strerror(errno)))") }
        do {
            var w = SafetensorsWriter()
            w.metadata["format"] = Self.checkpointFormat
            for p in parameters {
                guard let v = p.values else { throw BatchCoreError(.internal, "\(p.name) is not trainable") }
                try w.add(p.name, shape: p.shape, dtype: .f32, data: Array(UnsafeBufferPointer(start: v, count: p.count)))
            }
            try withExtendedLifetime(self) { try w.write(to: tmp + "/weights.safetensors") }
            if let optimizer { try optimizer.saveState(to: tmp + "/optimizer.state") }
            let delayed = try delayCheckpoint()
            if let delayed { try withExtendedLifetime(self) { try delayed.1.write(to: tmp + "/delayed.safetensors") } }
            var o = JSONObject()
            o["format"] = .string(Self.checkpointFormat)
            o["version"] = .int(1)
            o["step"] = .int(Int64(stepCount))
            o["step_calls"] = .int(Int64(stepCalls))
            o["tokens"] = .int(Int64(tokensSeen))
            o["micro_batch_tokens"] = .int(Int64(options.microBatchTokens))
            o["accumulation_steps"] = .int(Int64(options.accumulationSteps))
            o["world_size"] = .int(Int64(worldSize))
            o["optimizer"] = .bool(optimizer != nil)
            o["batch_size"] = batchCheckpoint()
            if let delayed { o["gradient_delay"] = delayed.0 }
            if let d = data {
                var data = JSONObject()
                data["seed"] = .string(String(d.seed))
                data["epochs"] = .int(Int64(d.epochs))
                data["epoch"] = .int(Int64(d.packer.position.epoch))
                data["index"] = .int(Int64(d.packer.position.index))
                data["examples"] = .int(Int64(d.train.count))
                data["tokens"] = .int(Int64(d.train.tokenCount))
                data["targets"] = .int(Int64(d.train.targetCount))
                o["data"] = .object(data)
            }
            try writeTextFile(tmp + "/trainer.json", JSONValue.object(o).serialized(pretty: true) + "\n")
            try replaceDirectory(dir, with: tmp)
        } catch {
            try? removeDirectory(tmp)
            throw error
        }
    }

    /// Restores `dir`: checks every part first (format, tensors' names and shapes, the
    /// data fingerprint, the optimizer state), then sets weights, optimizer state, data
    /// position and counters. A failed call changes nothing.
    package func loadCheckpoint(_ dir: String, optimizer: Optimizer?) throws {
        let json = try JSONValue.parse(try readWholeFile(dir + "/trainer.json", limit: 1 << 20, larger: "checkpoint trainer.json"))
        func int(_ v: JSONValue?, _ what: String, _ range: ClosedRange<Int> = 0...Int(Int32.max) * 1024) throws -> Int {
            guard let x = v?.intValue, range.contains(x) else { throw BatchCoreError.format("checkpoint: \(what) is missing or out of range") }
            return x
        }
        guard json["format"]?.stringValue == Self.checkpointFormat, json["version"]?.intValue == 1 else {
            throw BatchCoreError.format("\(dir) is not a batchcore trainer checkpoint (version 1)")
        }
        let step = try int(json["step"], "step"), tokens = try int(json["tokens"], "tokens", 0...Int.max / 2)
        // Older checkpoints have no step_calls: the data-driven step count was the only one.
        let calls = json["step_calls"] == nil ? step : try int(json["step_calls"], "step_calls")
        // Data-parallel: any number of ranks resumes, as long as the global batch (accumulation x ranks) is the same.
        let savedWorld = json["world_size"] == nil ? 1 : try int(json["world_size"], "world_size", 1...TrainerCollectives.maxWorldSize)
        guard try int(json["micro_batch_tokens"], "micro_batch_tokens") == options.microBatchTokens,
              try int(json["accumulation_steps"], "accumulation_steps") * savedWorld == globalAccumulationSteps else {
            throw BatchCoreError.invalid("checkpoint: made with other micro-batch tokens or accumulation steps x ranks than this trainer's")
        }
        var packer: MicroBatchPacker?
        if let d = json["data"] {
            guard var current = data else { throw BatchCoreError.badState("checkpoint has a data position: load the same data first") }
            guard d["seed"]?.stringValue == String(current.seed), try int(d["epochs"], "epochs") == current.epochs,
                  try int(d["examples"], "examples") == current.train.count,
                  try int(d["tokens"], "tokens", 0...Int.max / 2) == current.train.tokenCount,
                  try int(d["targets"], "targets", 0...Int.max / 2) == current.train.targetCount else {
                throw BatchCoreError.format("checkpoint: made with other data (examples, tokens, seed or epochs differ)")
            }
            let position = DataPosition(epoch: try int(d["epoch"], "epoch"), index: try int(d["index"], "index"))
            current.packer = try MicroBatchPacker(dataset: current.train, tokenBudget: options.microBatchTokens,
                                                  accumulationSteps: globalAccumulationSteps, seed: current.seed,
                                                  epochs: current.epochs,
                                                  overBudget: current.options.overLength == .truncate ? .truncate : .error,
                                                  position: position)
            packer = current.packer
        }
        let batchState = try readBatchCheckpoint(json["batch_size"])
        let delayed = try readDelayCheckpoint(json["gradient_delay"], dir: dir)
        let st = try SafetensorsFile(path: dir + "/weights.safetensors")
        guard st.tensors.count == parameters.count else {
            throw BatchCoreError.format("checkpoint has \(st.tensors.count) tensors, the trainer \(parameters.count)")
        }
        for p in parameters {
            guard let t = st.tensor(named: p.name), t.dtype == .f32, t.shape == p.shape else {
                throw BatchCoreError.format("checkpoint: tensor '\(p.name)' missing or not F32 \(p.shape)")
            }
        }
        try prepareTraining()   // the values to load into (allocating is no observable change)
        let hasOptimizer = json["optimizer"]?.boolValue ?? false
        if let optimizer {
            guard hasOptimizer else { throw BatchCoreError.format("checkpoint holds no optimizer state") }
            try optimizer.loadState(from: dir + "/optimizer.state")   // validates before changing anything
        }
        // Nothing below can fail.
        for p in parameters { try st.floats(p.name, into: p.values!) }
        try syncWeights()
        discardGradients()
        if let packer { data?.packer = packer }
        stepCount = step
        stepCalls = calls
        tokensSeen = tokens
        if let batchState { batch = batchState }
        try restoreDelay(delayed)
    }
}

/// Removes a directory and the regular files in it (checkpoints hold no subdirectories).
func removeDirectory(_ path: String) throws {
    guard let d = opendir(path) else {
        if errno == ENOENT { return }
        throw BatchCoreError.io("cannot open \(path): \(String(cString: strerror(errno)))")
    }
    var names: [String] = []
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { names.append(name) }
    }
    closedir(d)
    for n in names { unlink(path + "/" + n) }
    guard rmdir(path) == 0 else { throw BatchCoreError.io("cannot remove \(path): \(String(cString: strerror(errno)))") }
}

/// Puts directory `tmp` at `dir`: the old `dir` (if any) is moved aside, `tmp` renamed
/// into place, then the old one removed — a crash leaves the old or the new directory.
func replaceDirectory(_ dir: String, with tmp: String) throws {
    let old = dir + ".old-\(getpid())"
    var st = stat()
    let exists = stat(dir, &st) == 0
    if exists {
        try? removeDirectory(old)
        guard rename(dir, old) == 0 else { throw BatchCoreError.io("cannot move \(dir) aside: \(String(cString: strerror(errno)))") }
    }
    guard rename(tmp, dir) == 0 else {
        let e = String(cString: strerror(errno))
        if exists { rename(old, dir) }
        throw BatchCoreError.io("cannot rename \(tmp) to \(dir): \(e)")
    }
    if exists { try? removeDirectory(old) }
}
