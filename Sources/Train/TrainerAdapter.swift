import BCCore
import BCModel

extension Trainer {
    /// Writes the trained LoRA adapters as a PEFT directory (`adapter_config.json` +
    /// `adapter_model.safetensors`, see `LoRAAdapterSet.writePEFT`). Throws `.badState`
    /// for a full fine-tune.
    package func saveAdapter(_ directory: String, baseModel: String = "") throws {
        guard let adapters else { throw BatchCoreError.badState("the trainer is not training LoRA adapters") }
        try adapters.writePEFT(directory: directory, baseModel: baseModel)
    }
}

extension Trainer {
    /// Writes the trained LoRA adapters as one llama.cpp GGUF adapter file
    /// (`LoRAAdapterSet.writeGGUF`). Throws `.badState` for a full fine-tune.
    package func saveAdapterGGUF(_ path: String) throws {
        guard let adapters else { throw BatchCoreError.badState("the trainer is not training LoRA adapters") }
        try adapters.writeGGUF(path: path)
    }
}
