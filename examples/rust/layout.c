/* The C side of the Rust example's layout check: prints the size and every field
 * offset of the structs src/ffi.rs mirrors, in the format of
 * `engine-loop --print-layout`. Tests/c/check_examples.sh diffs the two. */
#include <batchcore.h>

#include <stddef.h>
#include <stdio.h>

#define SIZE(t) printf("%s sizeof %lu\n", #t, (unsigned long)sizeof(t))
#define FIELD(t, f) printf("%s %s %lu\n", #t, #f, (unsigned long)offsetof(t, f))

int main(void) {
    SIZE(bc_model_params);
    FIELD(bc_model_params, struct_size);
    FIELD(bc_model_params, reserved0);
    FIELD(bc_model_params, progress);
    FIELD(bc_model_params, progress_user_data);
    FIELD(bc_model_params, weights);
    FIELD(bc_model_params, reserved1);

    SIZE(bc_model_info);
    FIELD(bc_model_info, struct_size);
    FIELD(bc_model_info, architecture);
    FIELD(bc_model_info, reserved0);
    FIELD(bc_model_info, n_params);
    FIELD(bc_model_info, n_layer);
    FIELD(bc_model_info, n_embd);
    FIELD(bc_model_info, n_head);
    FIELD(bc_model_info, n_head_kv);
    FIELD(bc_model_info, n_ff);
    FIELD(bc_model_info, n_vocab);
    FIELD(bc_model_info, n_ctx_train);
    FIELD(bc_model_info, rope_freq_base);
    FIELD(bc_model_info, bos_token);
    FIELD(bc_model_info, eos_token);
    FIELD(bc_model_info, add_bos);
    FIELD(bc_model_info, reserved1);
    FIELD(bc_model_info, weight_bytes);
    FIELD(bc_model_info, weight_types);

    SIZE(bc_sampling_params);
    FIELD(bc_sampling_params, struct_size);
    FIELD(bc_sampling_params, temperature);
    FIELD(bc_sampling_params, top_k);
    FIELD(bc_sampling_params, top_p);
    FIELD(bc_sampling_params, min_p);
    FIELD(bc_sampling_params, repetition_penalty);
    FIELD(bc_sampling_params, frequency_penalty);
    FIELD(bc_sampling_params, presence_penalty);
    FIELD(bc_sampling_params, penalty_last_n);
    FIELD(bc_sampling_params, reserved0);
    FIELD(bc_sampling_params, seed);

    SIZE(bc_engine_params);
    FIELD(bc_engine_params, struct_size);
    FIELD(bc_engine_params, max_batched_tokens);
    FIELD(bc_engine_params, max_seqs);
    FIELD(bc_engine_params, policy);
    FIELD(bc_engine_params, n_ctx);
    FIELD(bc_engine_params, reserved0);
    FIELD(bc_engine_params, kv_bytes);
    FIELD(bc_engine_params, kv_type);
    FIELD(bc_engine_params, static_batching);
    FIELD(bc_engine_params, adapter_bytes);
    FIELD(bc_engine_params, offline);
    FIELD(bc_engine_params, shared_prefix_attention);

    SIZE(bc_request_params);
    FIELD(bc_request_params, struct_size);
    FIELD(bc_request_params, max_tokens);
    FIELD(bc_request_params, n);
    FIELD(bc_request_params, priority);
    FIELD(bc_request_params, ignore_eos);
    FIELD(bc_request_params, reserved0);
    FIELD(bc_request_params, stop_tokens);
    FIELD(bc_request_params, n_stop_tokens);
    FIELD(bc_request_params, reserved1);
    FIELD(bc_request_params, stop_strings);
    FIELD(bc_request_params, n_stop_strings);
    FIELD(bc_request_params, reserved2);
    FIELD(bc_request_params, user_tag);
    FIELD(bc_request_params, adapter);
    FIELD(bc_request_params, adapter_scale);
    FIELD(bc_request_params, reserved3);

    SIZE(bc_event);
    FIELD(bc_event, kind);
    FIELD(bc_event, index);
    FIELD(bc_event, request_id);
    FIELD(bc_event, user_tag);
    FIELD(bc_event, token);
    FIELD(bc_event, logprob);
    FIELD(bc_event, text);
    FIELD(bc_event, text_len);
    FIELD(bc_event, finish_reason);
    FIELD(bc_event, prompt_tokens);
    FIELD(bc_event, cached_prompt_tokens);
    FIELD(bc_event, generated_tokens);
    FIELD(bc_event, ttft_seconds);
    FIELD(bc_event, itl_seconds);
    FIELD(bc_event, total_seconds);
    FIELD(bc_event, message);

    SIZE(bc_engine_metrics);
    FIELD(bc_engine_metrics, struct_size);
    FIELD(bc_engine_metrics, reserved0);
    FIELD(bc_engine_metrics, steps);
    FIELD(bc_engine_metrics, submitted);
    FIELD(bc_engine_metrics, finished);
    FIELD(bc_engine_metrics, waiting);
    FIELD(bc_engine_metrics, running);
    FIELD(bc_engine_metrics, preemptions);
    FIELD(bc_engine_metrics, generated_tokens);
    FIELD(bc_engine_metrics, batched_tokens);
    FIELD(bc_engine_metrics, busy_seconds);
    FIELD(bc_engine_metrics, tokens_per_second);
    FIELD(bc_engine_metrics, kv_used_bytes);
    FIELD(bc_engine_metrics, kv_total_bytes);
    FIELD(bc_engine_metrics, prefix_hit_rate);
    FIELD(bc_engine_metrics, adapter_resident_bytes);
    FIELD(bc_engine_metrics, adapter_loads);
    FIELD(bc_engine_metrics, adapter_evictions);
    FIELD(bc_engine_metrics, shared_prefix_rows);
    FIELD(bc_engine_metrics, attention_positions);
    FIELD(bc_engine_metrics, shared_prefix_positions_saved);
    FIELD(bc_engine_metrics, shared_prefix_fallbacks);
    return 0;
}
