/// ggml tensor element types, with the raw values GGUF files store (ggml.h's
/// `enum ggml_type`). Every value ggml has assigned is listed so names print; only
/// types with a `layout` can be read from a GGUF file, and only F32, F16, BF16,
/// Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K can be dequantized by `dequantize(type:data:count:into:)`.
package enum GGMLType: UInt32, CaseIterable, CustomStringConvertible, Sendable {
    case f32 = 0
    case f16 = 1
    case q4_0 = 2
    case q4_1 = 3
    // 4 (Q4_2) and 5 (Q4_3) were removed from ggml before GGUF existed.
    case q5_0 = 6
    case q5_1 = 7
    case q8_0 = 8
    case q8_1 = 9
    case q2_K = 10
    case q3_K = 11
    case q4_K = 12
    case q5_K = 13
    case q6_K = 14
    case q8_K = 15
    case iq2_XXS = 16
    case iq2_XS = 17
    case iq3_XXS = 18
    case iq1_S = 19
    case iq4_NL = 20
    case iq3_S = 21
    case iq2_S = 22
    case iq4_XS = 23
    case i8 = 24
    case i16 = 25
    case i32 = 26
    case i64 = 27
    case f64 = 28
    case iq1_M = 29
    case bf16 = 30
    /// Runtime repackings of Q4_0 / IQ4_NL; ggml no longer accepts them in files.
    case q4_0_4_4 = 31
    case q4_0_4_8 = 32
    case q4_0_8_8 = 33
    case tq1_0 = 34
    case tq2_0 = 35
    case iq4_NL_4_4 = 36
    case iq4_NL_4_8 = 37
    case iq4_NL_8_8 = 38
    case mxfp4 = 39
    case nvfp4 = 40
    case q1_0 = 41

    /// ggml's spelling of the type name ("Q4_1", "BF16", ...).
    package var name: String {
        switch self {
        case .f32: "F32"
        case .f16: "F16"
        case .q4_0: "Q4_0"
        case .q4_1: "Q4_1"
        case .q5_0: "Q5_0"
        case .q5_1: "Q5_1"
        case .q8_0: "Q8_0"
        case .q8_1: "Q8_1"
        case .q2_K: "Q2_K"
        case .q3_K: "Q3_K"
        case .q4_K: "Q4_K"
        case .q5_K: "Q5_K"
        case .q6_K: "Q6_K"
        case .q8_K: "Q8_K"
        case .iq2_XXS: "IQ2_XXS"
        case .iq2_XS: "IQ2_XS"
        case .iq3_XXS: "IQ3_XXS"
        case .iq1_S: "IQ1_S"
        case .iq4_NL: "IQ4_NL"
        case .iq3_S: "IQ3_S"
        case .iq2_S: "IQ2_S"
        case .iq4_XS: "IQ4_XS"
        case .i8: "I8"
        case .i16: "I16"
        case .i32: "I32"
        case .i64: "I64"
        case .f64: "F64"
        case .iq1_M: "IQ1_M"
        case .bf16: "BF16"
        case .q4_0_4_4: "Q4_0_4_4"
        case .q4_0_4_8: "Q4_0_4_8"
        case .q4_0_8_8: "Q4_0_8_8"
        case .tq1_0: "TQ1_0"
        case .tq2_0: "TQ2_0"
        case .iq4_NL_4_4: "IQ4_NL_4_4"
        case .iq4_NL_4_8: "IQ4_NL_4_8"
        case .iq4_NL_8_8: "IQ4_NL_8_8"
        case .mxfp4: "MXFP4"
        case .nvfp4: "NVFP4"
        case .q1_0: "Q1_0"
        }
    }

    package var description: String { name }

    /// Elements per block and bytes per block (gguf-py's GGML_QUANT_SIZES), or nil for
    /// the repacked types that are not valid in files.
    package var layout: (blockSize: Int, bytesPerBlock: Int)? {
        let qk = 256  // QK_K, the super-block of the k-quants
        switch self {
        case .f32: return (1, 4)
        case .f16: return (1, 2)
        case .q4_0: return (32, 2 + 16)
        case .q4_1: return (32, 2 + 2 + 16)
        case .q5_0: return (32, 2 + 4 + 16)
        case .q5_1: return (32, 2 + 2 + 4 + 16)
        case .q8_0: return (32, 2 + 32)
        case .q8_1: return (32, 4 + 4 + 32)
        case .q2_K: return (qk, 2 + 2 + qk / 16 + qk / 4)
        case .q3_K: return (qk, 2 + qk / 4 + qk / 8 + 12)
        case .q4_K: return (qk, 2 + 2 + qk / 2 + 12)
        case .q5_K: return (qk, 2 + 2 + qk / 2 + qk / 8 + 12)
        case .q6_K: return (qk, 2 + qk / 2 + qk / 4 + qk / 16)
        case .q8_K: return (qk, 4 + qk + qk / 8)
        case .iq2_XXS: return (qk, 2 + qk / 4)
        case .iq2_XS: return (qk, 2 + qk / 4 + qk / 32)
        case .iq3_XXS: return (qk, 2 + qk / 4 + qk / 8)
        case .iq1_S: return (qk, 2 + qk / 8 + qk / 16)
        case .iq4_NL: return (32, 2 + 16)
        case .iq3_S: return (qk, 2 + qk / 4 + qk / 8 + qk / 32 + 4)
        case .iq2_S: return (qk, 2 + qk / 4 + qk / 16)
        case .iq4_XS: return (qk, 2 + 2 + qk / 2 + qk / 64)
        case .i8: return (1, 1)
        case .i16: return (1, 2)
        case .i32: return (1, 4)
        case .i64: return (1, 8)
        case .f64: return (1, 8)
        case .iq1_M: return (qk, qk / 8 + qk / 16 + qk / 32)
        case .bf16: return (1, 2)
        case .tq1_0: return (qk, 2 + 4 * 13)
        case .tq2_0: return (qk, 2 + 64)
        case .mxfp4: return (32, 1 + 16)
        case .nvfp4: return (64, 4 + 32)
        case .q1_0: return (128, 2 + 16)
        case .q4_0_4_4, .q4_0_4_8, .q4_0_8_8, .iq4_NL_4_4, .iq4_NL_4_8, .iq4_NL_8_8: return nil
        }
    }

    /// Elements per block (1 for plain float/int types); nil when `layout` is nil.
    package var blockSize: Int? { layout?.blockSize }
    /// Bytes per block; nil when `layout` is nil.
    package var bytesPerBlock: Int? { layout?.bytesPerBlock }

    /// Whether `dequantize(type:data:count:into:)` supports this type.
    package var canDequantize: Bool {
        switch self {
        case .f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K: true
        default: false
        }
    }

    /// Bytes holding `count` elements, or nil when `count` is negative, not a whole
    /// number of blocks, the type has no layout, or the size overflows Int.
    package func byteCount(elements count: Int) -> Int? {
        guard let (bs, bpb) = layout, count >= 0, count % bs == 0 else { return nil }
        let (bytes, overflow) = (count / bs).multipliedReportingOverflow(by: bpb)
        return overflow ? nil : bytes
    }
}
