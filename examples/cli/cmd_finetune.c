/* batchcore finetune — full or LoRA fine-tuning of a loaded model on a data file, built only on
 * the C ABI: the trainer (bc_trainer_*) reads, packs and steps the data, the existing
 * optimizer (bc_optimizer_*) updates the weights, bc_lr_schedule_eval sets the rate of
 * each step. JSONL records on stdout (one per step, evaluations, a summary), progress on
 * stderr. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

static void finetune_usage(FILE *out) {
    fprintf(out,
            "usage: batchcore finetune -m MODEL --data TRAIN --out DIR [--eval FILE | --eval-fraction F]\n"
            "                          [--forget-eval FILE] [--optimizer NAME] [--lr LR] [--weight-decay W]\n"
            "                          [--schedule KIND] [--warmup-steps N] [--min-lr LR] [--decay-steps N]\n"
            "                          [--max-grad-norm G] [--micro-batch-tokens N] [--accumulation N]\n"
            "                          [--epochs N] [--seed S] [--recompute] [--compute f32|bf16] [--memory-limit BYTES]\n"
            "                          [--checkpoint-every N] [--resume] [--format gguf-f32|gguf-f16|hf]\n"
            "                          [--max-tokens N] [--truncate] [--skip-invalid] [--gradient-delay D]\n"
            "                          [--chat-targets assistant|all] [--eval-every N] [-t THREADS] [-q]\n"
            "                          [--lora r=R[,alpha=A][,targets=T,...][,rslora][,seed=N][,dropout=P]]\n"
            "                          [--batch-control fixed|ramp|noise] [--min-micro-batches N]\n"
            "                          [--max-micro-batches N] [--ramp-steps N] [--lr-scaling none|linear|sqrt]\n"
            "                          [--noise-ema D] [--noise-warmup N]\n"
            "\n"
            "Full fine-tuning of MODEL (every tensor trained) on the examples of TRAIN, then the\n"
            "trained model is written to DIR; with --lora, LoRA: low-rank adapters on the frozen\n"
            "model are trained and written to DIR/adapter (a PEFT directory). Data files: JSONL (.jsonl/.json), one example per\n"
            "line: {\"text\": ...} (every token but the first is a target), {\"prompt\", \"completion\"}\n"
            "(the completion and an end token are targets) or {\"messages\": [{\"role\", \"content\"},\n"
            "...]} (the model's chat template; targets per --chat-targets); or plain text (.txt/.md),\n"
            "cut into documents of --max-tokens. Examples are tokenized once, shuffled per epoch\n"
            "from --seed and packed into micro-batches of --micro-batch-tokens tokens; one optimizer\n"
            "step takes --accumulation micro-batches, and its loss is the mean over ALL their target\n"
            "tokens. An invalid line or an over-long example is an error naming its line, unless\n"
            "--skip-invalid / --truncate (then counted in the data summary).\n"
            "\n"
            "Before training, stderr gets the trainer's memory statement (each part in MiB; over\n"
            "--memory-limit or the available memory it is an error, exit 1) and the data summary.\n"
            "The eval set (--eval, or --eval-fraction of TRAIN held out) is evaluated before\n"
            "training, every --eval-every steps and at the end: loss per target token and\n"
            "perplexity exp(loss). --forget-eval FILE (a text of another domain, any data format)\n"
            "is evaluated before and after: how much the model learned vs how much it forgot.\n"
            "\n"
            "stdout: JSON lines, so the run pipes into other tools:\n"
            "  {\"memory\":{\"model_weights\":B,...,\"added\":B}}      the memory statement, bytes\n"
            "  {\"data\":{\"examples\":N,\"tokens\":N,\"targets\":N,\"truncated\":N,\"skipped\":N,\n"
            "           \"eval_examples\":N,\"steps\":N}}\n"
            "  {\"step\":S,\"steps\":T,\"epoch\":E,\"loss\":L,\"tokens\":N,\"targets\":N,\"lr\":R,\n"
            "   \"micro_batches\":M,\"next_micro_batches\":M,\"small_targets\":N,\"kappa\":K,\n"
            "   \"noise_scale\":B|null,\"grad_sq\":G2|null,\"trace\":TR|null,\n"
            "   \"grad_norm\":G,\"tokens_per_s\":X,\"seconds\":D}              every step; lr is the rate\n"
            "   the step used (x lr scaling of kappa); noise_scale is B_simple in target tokens\n"
            "   (tr(Sigma)/|G|^2, smoothed; null with one micro-batch per step); a step with a\n"
            "   non-finite loss or gradient is skipped (weights untouched) and has \"skipped\":true\n"
            "   (--gradient-delay D: the first D steps apply nothing and have \"applied\":false)\n"
            "  {\"step\":S,\"eval_loss\":L,\"eval_ppl\":P,\"eval_targets\":N}  every evaluation\n"
            "  {\"step\":S,\"forget_loss\":L,\"forget_ppl\":P,\"forget_targets\":N}\n"
            "  {\"summary\":{\"steps\":S,\"total_steps\":T,\"tokens\":N,\"seconds\":D,\"skipped_steps\":K,\n"
            "   \"eval_loss_before\":..,\"eval_ppl_before\":..,\"eval_loss_after\":..,\"eval_ppl_after\":..,\n"
            "   \"forget_loss_before\":..,\"forget_ppl_before\":..,\"forget_loss_after\":..,\n"
            "   \"forget_ppl_after\":..,\"resumed_from_step\":S|null,\"stopped_by\":\"SIGINT\"|null,\n"
            "   \"checkpoint\":PATH|null,\"model\":PATH|null,\"adapter\":PATH|null}}   (null: not\n"
            "   measured or not written)\n"
            "stderr: a progress line (step/steps, loss, tok/s, lr, grad norm, ETA) updated in place\n"
            "on a terminal, else one line per step; the memory and data statements; a summary.\n"
            "\n"
            "DIR holds: checkpoint/ (weights, optimizer state, data position: written every\n"
            "--checkpoint-every steps and at the end), run.json (the options and the evaluations\n"
            "before training, so a resumed run reports the same \"before\"), and the trained model:\n"
            "model.gguf (gguf-f32, gguf-f16: only from a GGUF model) or model/ (hf: config.json,\n"
            "model.safetensors, tokenizer files). bc_model_load (batchcore info -m ...) reads both.\n"
            "With --lora, instead of the model: adapter/ (adapter_config.json: peft_type LORA, r,\n"
            "lora_alpha, use_rslora, target_modules; adapter_model.safetensors: lora_A/lora_B, F32),\n"
            "loadable by Hugging Face PEFT on the base model; checkpoint/ holds the adapters.\n");
    fprintf(out,
            "--resume continues from DIR/checkpoint bit-identically to an uninterrupted run: the\n"
            "same data and options are required (the options are compared with run.json, the\n"
            "data is checked by the library).\n"
            "\n"
            "options:\n");
    fprintf(out,
            "  -m, --model PATH            model to fine-tune: GGUF file or Hugging Face directory\n"
            "                              (default: see MODEL below)\n"
            "  -q, --quiet                 nothing on stderr but errors (stdout is unchanged)\n"
            "      --data FILE             training data (required)\n"
            "      --out DIR               output directory, created if missing (required)\n"
            "      --eval FILE             eval set (default: none, or --eval-fraction)\n"
            "      --eval-fraction F       hold out this share of TRAIN as the eval set, 0 <= F < 1\n"
            "      --forget-eval FILE      measure this file's perplexity before and after\n"
            "      --optimizer NAME        adamw, adam, sgd, lion, lamb, adagrad, rmsprop, adabrake\n"
            "                              (default adamw; the library's defaults, PyTorch's / timm's)\n"
            "      --lr LR                 peak learning rate (default 1e-4)\n"
            "      --weight-decay W        weight decay (default: the optimizer's, AdamW 0.01)\n"
            "      --schedule KIND         constant, cosine, linear or wsd (warmup-stable-decay)\n"
            "                              (default constant)\n"
            "      --warmup-steps N        linear warmup from 0 over N steps (default 0)\n"
            "      --min-lr LR             final rate of cosine/linear/wsd (default 0)\n"
            "      --decay-steps N         wsd: length of the final decay (default: a fifth of the steps)\n"
            "      --max-grad-norm G       clip the global gradient norm to G; 0 = off (default 1.0)\n"
            "      --micro-batch-tokens N  tokens of one forward/backward pass (default 2048)\n"
            "      --accumulation N        micro-batches per optimizer step (default 1)\n"
            "      --epochs N              passes over the training set (default 1)\n"
            "      --seed S                shuffle seed, an unsigned integer (default 0)\n"
            "      --gradient-delay D      asynchronous mode: each step applies the gradient of D steps\n"
            "                              before (0..64, default 0 = off; the first D steps apply\n"
            "                              nothing; memory D x gradients). Use --optimizer adabrake.\n"
            "      --recompute             activation checkpointing: recompute each layer's forward\n"
            "                              in backward (less memory, slower)\n"
            "      --compute f32|bf16      arithmetic of the matrix products: f32, or bf16 with float32\n"
            "                              sums (mixed precision, as PyTorch autocast; about 2x the\n"
            "                              matrix throughput; needs AVX-512 BF16) (default f32)\n"
            "      --memory-limit BYTES    memory the trainer may add to the model (suffix K, M, G:\n"
            "                              binary units); default: the machine's available memory\n"
            "      --checkpoint-every N    write DIR/checkpoint every N steps; 0 = only at the end\n"
            "                              (default 0)\n"
            "      --resume                continue from DIR/checkpoint\n"
            "      --format F              gguf-f32, gguf-f16 or hf (default: gguf-f32 for a GGUF\n"
            "                              model, hf for a Hugging Face one; GGUF output needs a\n"
            "                              GGUF model)\n"
            "      --max-tokens N          longest example in tokens, capped by --micro-batch-tokens and\n"
            "                              the model's context; 0 = that cap (default 0)\n"
            "      --truncate              cut over-long examples to --max-tokens (default: error)\n"
            "      --skip-invalid          skip invalid lines (default: error naming the line)\n"
            "      --chat-targets WHICH    {\"messages\"}: assistant (default) or all tokens\n"
            "      --eval-every N          also evaluate every N steps; 0 = before and after only\n"
            "                              (default 0)\n"
            "      --lora SPEC             train LoRA adapters instead of every tensor (much less\n"
            "                              memory: the base weights stay frozen). SPEC, comma-separated:\n"
            "                                r=R          rank, 1..1024 (required)\n"
            "                                alpha=A      scale = A / R (default 16)\n"
            "                                targets=T,.. the projections of every layer that get an\n"
            "                                             adapter: q, k, v, o, gate, up, down (or\n"
            "                                             q_proj ...), or all (default q,v)\n"
            "                                rslora       scale = A / sqrt(R) (rank-stabilized LoRA)\n"
            "                                seed=N       seed of the A matrices' initialisation and of\n"
            "                                             the dropout masks (0)\n"
            "                                dropout=P    LoRA dropout (PEFT's lora_dropout) of the\n"
            "                                             adapters' input in training, 0 <= P < 1 (0)\n"
            "                              e.g. --lora r=16,alpha=32,targets=q,k,v,o,gate,up,down\n"
            "                              An unknown key, a bad value or a repeated key or target is\n"
            "                              a usage error; --format does not apply.\n"
            "      --batch-control MODE    micro-batches per step: fixed (--accumulation), ramp (linear\n"
            "                              from --min- to --max-micro-batches over --ramp-steps) or noise\n"
            "                              (grow toward the measured noise scale B_simple, at most x2 per\n"
            "                              step, never shrinking); changed only between steps (default fixed)\n"
            "      --min-micro-batches N   lower bound (default: --accumulation; noise: at least 2)\n"
            "      --max-micro-batches N   upper bound (default 8 x the lower bound)\n"
            "      --ramp-steps N          ramp length in steps (default: a quarter of the run)\n"
            "      --lr-scaling RULE       a step of kappa = micro-batches / --accumulation gets lr x kappa\n"
            "                              (linear), lr x sqrt(kappa) (sqrt) or lr (none); default linear\n"
            "                              for sgd, sqrt for the others\n"
            "      --noise-ema D           EMA decay of the noise-scale estimates, 0 <= D < 1 (default 0.9)\n"
            "      --noise-warmup N        noise: estimates before the batch changes (default 3)\n"
            "  -t, --threads N             threads; 0 = all cores (default 0)\n"
            "  -h, --help                  this help\n"
            "\n"
            "Signals: the first SIGINT (Ctrl-C) or SIGTERM finishes the current step, writes\n"
            "DIR/checkpoint, prints the summary (no final evaluation, no model file) and exits\n"
            "with 128 + the signal number: 130 (SIGINT) or 143 (SIGTERM); continue with --resume.\n"
            "A second signal exits at once.\n"
            "\n"
            "Exit status: 0 success, 1 failure (a library error: bad data, out of memory, a\n"
            "mismatched checkpoint, ...), 2 usage error, 130/143 after SIGINT/SIGTERM.\n"
            "\n" CLI_MODEL_RESOLUTION_HELP);
}

typedef struct finetune_opts {
    const char *data, *out, *eval, *forget;
    double eval_fraction;
    int have_eval_fraction;
    const char *optimizer;
    bc_optim_algorithm algorithm;
    double lr, weight_decay, min_lr, max_grad_norm;
    int have_weight_decay;
    const char *schedule;
    int schedule_kind;
    long warmup, decay_steps, micro_batch_tokens, accumulation, epochs, checkpoint_every, eval_every;
    long max_tokens, threads, gradient_delay;
    unsigned long long seed, memory_limit;
    int recompute, resume, truncate, skip_invalid, chat_all, compute_bf16;
    const char *format;
    int weights_format;
    /* --lora: rank 0 = a full fine-tune. */
    uint32_t lora_rank, lora_targets;
    double lora_alpha;
    int lora_rslora;
    unsigned long long lora_seed;
    double lora_dropout;
    /* --batch-control: BC_BATCH_FIXED = as before. */
    int batch_mode, lr_scaling; /* lr_scaling -1: by the optimizer (sgd linear, others sqrt) */
    long min_micro_batches, max_micro_batches, ramp_steps, noise_warmup;
    double noise_ema;
} finetune_opts;

static const char *const batch_modes[] = {"fixed", "ramp", "noise"};
static const char *const lr_scalings[] = {"none", "linear", "sqrt"};


static const struct {
    const char *name;
    bc_optim_algorithm algorithm;
    uint32_t slots; /* state buffers per parameter at the library's defaults (memory estimate) */
} optimizers[] = {
    {"adamw", BC_OPTIM_ADAMW, 2}, {"adam", BC_OPTIM_ADAM, 2},       {"sgd", BC_OPTIM_SGD, 1},
    {"lion", BC_OPTIM_LION, 1},   {"lamb", BC_OPTIM_LAMB, 2},       {"adagrad", BC_OPTIM_ADAGRAD, 1},
    {"rmsprop", BC_OPTIM_RMSPROP, 1}, {"adabrake", BC_OPTIM_ADABRAKE, 1},
};

static const struct {
    const char *name;
    int kind;
} schedules[] = {
    {"constant", BC_LR_CONSTANT}, {"cosine", BC_LR_WARMUP_COSINE}, {"linear", BC_LR_WARMUP_LINEAR}, {"wsd", BC_LR_WSD},
};

/* Parses a byte count with an optional K/M/G suffix (binary). */
static int parse_bytes(const char *s, unsigned long long *out) {
    size_t n = strlen(s);
    unsigned long long mul = 1;
    char buf[64];
    if (n == 0 || n >= sizeof buf) return 0;
    memcpy(buf, s, n + 1);
    char last = buf[n - 1];
    if (last == 'K' || last == 'k') mul = 1ULL << 10;
    else if (last == 'M' || last == 'm') mul = 1ULL << 20;
    else if (last == 'G' || last == 'g') mul = 1ULL << 30;
    if (mul != 1) buf[--n] = '\0';
    unsigned long long v = 0;
    if (!cli_parse_u64(buf, &v) || v == 0 || v > UINT64_MAX / mul) return 0;
    *out = v * mul;
    return 1;
}

static int parse_double(const char *s, double *out) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (!s[0] || *end || errno == ERANGE || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

/* PEFT's module names of the BC_LORA_* bits, in bit order, and --lora's short names. */
static const struct {
    const char *name, *module;
    uint32_t bit;
} lora_targets[] = {
    {"q", "q_proj", BC_LORA_Q},       {"k", "k_proj", BC_LORA_K},          {"v", "v_proj", BC_LORA_V},
    {"o", "o_proj", BC_LORA_O},       {"gate", "gate_proj", BC_LORA_GATE}, {"up", "up_proj", BC_LORA_UP},
    {"down", "down_proj", BC_LORA_DOWN},
};

#define LORA_MAX_RANK 1024u

/* Parses --lora SPEC: r=R[,alpha=A][,targets=T[,T...]][,rslora][,seed=N][,dropout=P]. T is q,
 * k, v, o, gate, up, down (or PEFT's q_proj ...) or all; a bare name after targets=
 * continues the list. r is required (1..1024); alpha defaults to 16, targets to q,v, seed
 * to 0, dropout to 0 (0 <= P < 1) (the library's defaults). 1 on success; 0 after printing why (nothing in *o changed). */
static int parse_lora(const char *spec, finetune_opts *o) {
    int have_r = 0, have_alpha = 0, have_targets = 0, have_rslora = 0, have_seed = 0, have_dropout = 0, in_targets = 0;
    uint32_t targets = 0;
    unsigned long long rank = 0, seed = 0;
    double alpha = 16, dropout = 0;
    int rslora = 0;
    const char *why = NULL;
    char field[128], shown[128];
    const char *p = spec;
    shown[0] = '\0';
    for (;;) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof field) {
            why = len == 0 ? "an empty field in" : "a field too long in";
            snprintf(shown, sizeof shown, "%s", spec);
            break;
        }
        memcpy(field, p, len);
        field[len] = '\0';
        snprintf(shown, sizeof shown, "%s", field);
        char *eq = strchr(field, '=');
        const char *key = field, *val = NULL;
        if (eq) { *eq = '\0'; val = eq + 1; }
        int is_target = 0;
        if (strcmp(key, "r") == 0 && val) {
            if (have_r) { why = "duplicate key"; break; }
            have_r = 1;
            if (!cli_parse_u64(val, &rank) || rank < 1 || rank > LORA_MAX_RANK) { why = "r must be an integer 1..1024:"; break; }
        } else if (strcmp(key, "alpha") == 0 && val) {
            if (have_alpha) { why = "duplicate key"; break; }
            have_alpha = 1;
            if (!parse_double(val, &alpha) || !(alpha > 0) || alpha > 3.0e38) { why = "alpha must be a positive number:"; break; }
        } else if (strcmp(key, "seed") == 0 && val) {
            if (have_seed) { why = "duplicate key"; break; }
            have_seed = 1;
            if (!cli_parse_u64(val, &seed)) { why = "seed must be an unsigned integer:"; break; }
        } else if (strcmp(key, "dropout") == 0 && val) {
            if (have_dropout) { why = "duplicate key"; break; }
            have_dropout = 1;
            if (!parse_double(val, &dropout) || !(dropout >= 0) || !(dropout < 1)) { why = "dropout must be a number 0 <= P < 1:"; break; }
        } else if (strcmp(key, "rslora") == 0 && !val) {
            if (have_rslora) { why = "duplicate key"; break; }
            have_rslora = 1;
            rslora = 1;
        } else if (strcmp(key, "rslora") == 0) {
            why = "rslora takes no value:";
            break;
        } else if (strcmp(key, "targets") == 0 && val) {
            if (have_targets) { why = "duplicate key"; break; }
            have_targets = 1;
            is_target = 1;
        } else if (!val && in_targets) {
            val = key;
            is_target = 1;
        } else {
            why = val ? "unknown key" : "unknown key (or a target name not after targets=)";
            break;
        }
        if (is_target) {
            uint32_t bit = strcmp(val, "all") == 0 ? (uint32_t)BC_LORA_ALL : 0;
            for (size_t k = 0; k < sizeof lora_targets / sizeof lora_targets[0]; k++)
                if (strcmp(val, lora_targets[k].name) == 0 || strcmp(val, lora_targets[k].module) == 0) bit = lora_targets[k].bit;
            snprintf(shown, sizeof shown, "%s", val);
            if (!bit) { why = "unknown target (want q, k, v, o, gate, up, down or all):"; break; }
            if (targets & bit) { why = "duplicate target"; break; }
            targets |= bit;
        }
        in_targets = is_target;
        p += len;
        if (*p == '\0') break;
        p++; /* the comma; a trailing comma is an empty field */
    }
    if (!why && !have_r) { why = "r=RANK is required:"; snprintf(shown, sizeof shown, "%s", spec); }
    if (why) {
        fprintf(stderr, "batchcore finetune: --lora: %s '%s'\n", why, shown);
        fprintf(stderr, "  want r=R[,alpha=A][,targets=q,k,v,o,gate,up,down][,rslora][,seed=N][,dropout=P]\n");
        return 0;
    }
    o->lora_rank = (uint32_t)rank;
    o->lora_alpha = alpha;
    o->lora_targets = have_targets ? targets : (uint32_t)(BC_LORA_Q | BC_LORA_V);
    o->lora_rslora = rslora;
    o->lora_seed = seed;
    o->lora_dropout = dropout;
    return 1;
}

/* 1 when `a` is a finetune option (value v parsed into o, outcome ANDed into *ok), else 0. */
static int finetune_option(const char *a, const char *v, finetune_opts *o, int *ok) {
    if (strcmp(a, "--data") == 0) { *ok = *ok && v[0]; o->data = v; }
    else if (strcmp(a, "--out") == 0) { *ok = *ok && v[0]; o->out = v; }
    else if (strcmp(a, "--eval") == 0) { *ok = *ok && v[0]; o->eval = v; }
    else if (strcmp(a, "--forget-eval") == 0) { *ok = *ok && v[0]; o->forget = v; }
    else if (strcmp(a, "--eval-fraction") == 0) {
        *ok = *ok && parse_double(v, &o->eval_fraction) && o->eval_fraction >= 0 && o->eval_fraction < 1;
        o->have_eval_fraction = 1;
    } else if (strcmp(a, "--optimizer") == 0) {
        int found = 0;
        for (size_t k = 0; k < sizeof optimizers / sizeof optimizers[0]; k++)
            if (strcmp(v, optimizers[k].name) == 0) { o->optimizer = optimizers[k].name; o->algorithm = optimizers[k].algorithm; found = 1; }
        *ok = *ok && found;
    } else if (strcmp(a, "--schedule") == 0) {
        int found = 0;
        for (size_t k = 0; k < sizeof schedules / sizeof schedules[0]; k++)
            if (strcmp(v, schedules[k].name) == 0) { o->schedule = schedules[k].name; o->schedule_kind = schedules[k].kind; found = 1; }
        *ok = *ok && found;
    } else if (strcmp(a, "--lr") == 0) *ok = *ok && parse_double(v, &o->lr) && o->lr >= 0;
    else if (strcmp(a, "--min-lr") == 0) *ok = *ok && parse_double(v, &o->min_lr) && o->min_lr >= 0;
    else if (strcmp(a, "--weight-decay") == 0) {
        *ok = *ok && parse_double(v, &o->weight_decay) && o->weight_decay >= 0;
        o->have_weight_decay = 1;
    } else if (strcmp(a, "--max-grad-norm") == 0) *ok = *ok && parse_double(v, &o->max_grad_norm) && o->max_grad_norm >= 0;
    else if (strcmp(a, "--warmup-steps") == 0) *ok = *ok && cli_parse_long(v, &o->warmup) && o->warmup >= 0;
    else if (strcmp(a, "--decay-steps") == 0) *ok = *ok && cli_parse_long(v, &o->decay_steps) && o->decay_steps >= 1;
    else if (strcmp(a, "--micro-batch-tokens") == 0)
        *ok = *ok && cli_parse_long(v, &o->micro_batch_tokens) && o->micro_batch_tokens >= 1 && o->micro_batch_tokens <= INT32_MAX;
    else if (strcmp(a, "--accumulation") == 0)
        *ok = *ok && cli_parse_long(v, &o->accumulation) && o->accumulation >= 1 && o->accumulation <= INT32_MAX;
    else if (strcmp(a, "--epochs") == 0) *ok = *ok && cli_parse_long(v, &o->epochs) && o->epochs >= 1 && o->epochs <= INT32_MAX;
    else if (strcmp(a, "--seed") == 0) *ok = *ok && cli_parse_u64(v, &o->seed);
    else if (strcmp(a, "--gradient-delay") == 0)
        *ok = *ok && cli_parse_long(v, &o->gradient_delay) && o->gradient_delay >= 0 && o->gradient_delay <= 64;
    else if (strcmp(a, "--memory-limit") == 0) *ok = *ok && parse_bytes(v, &o->memory_limit);
    else if (strcmp(a, "--compute") == 0) {
        o->compute_bf16 = strcmp(v, "bf16") == 0;
        *ok = *ok && (o->compute_bf16 || strcmp(v, "f32") == 0);
    }
    else if (strcmp(a, "--checkpoint-every") == 0) *ok = *ok && cli_parse_long(v, &o->checkpoint_every) && o->checkpoint_every >= 0;
    else if (strcmp(a, "--eval-every") == 0) *ok = *ok && cli_parse_long(v, &o->eval_every) && o->eval_every >= 0;
    else if (strcmp(a, "--batch-control") == 0) {
        int found = 0;
        for (int k = 0; k < 3; k++) if (strcmp(v, batch_modes[k]) == 0) { o->batch_mode = k; found = 1; }
        *ok = *ok && found;
    } else if (strcmp(a, "--lr-scaling") == 0) {
        int found = 0;
        for (int k = 0; k < 3; k++) if (strcmp(v, lr_scalings[k]) == 0) { o->lr_scaling = k; found = 1; }
        *ok = *ok && found;
    } else if (strcmp(a, "--min-micro-batches") == 0)
        *ok = *ok && cli_parse_long(v, &o->min_micro_batches) && o->min_micro_batches >= 1 && o->min_micro_batches <= 65536;
    else if (strcmp(a, "--max-micro-batches") == 0)
        *ok = *ok && cli_parse_long(v, &o->max_micro_batches) && o->max_micro_batches >= 1 && o->max_micro_batches <= 65536;
    else if (strcmp(a, "--ramp-steps") == 0) *ok = *ok && cli_parse_long(v, &o->ramp_steps) && o->ramp_steps >= 1;
    else if (strcmp(a, "--noise-warmup") == 0)
        *ok = *ok && cli_parse_long(v, &o->noise_warmup) && o->noise_warmup >= 0 && o->noise_warmup <= 1000000;
    else if (strcmp(a, "--noise-ema") == 0) *ok = *ok && parse_double(v, &o->noise_ema) && o->noise_ema >= 0 && o->noise_ema < 1;
    else if (strcmp(a, "--max-tokens") == 0)
        *ok = *ok && cli_parse_long(v, &o->max_tokens) && o->max_tokens >= 0 && o->max_tokens <= INT32_MAX;
    else if (strcmp(a, "-t") == 0 || strcmp(a, "--threads") == 0)
        *ok = *ok && cli_parse_long(v, &o->threads) && o->threads >= 0 && o->threads <= 4096;
    else if (strcmp(a, "--format") == 0) {
        o->format = v;
        if (strcmp(v, "gguf-f32") == 0) o->weights_format = BC_WEIGHTS_GGUF_F32;
        else if (strcmp(v, "gguf-f16") == 0) o->weights_format = BC_WEIGHTS_GGUF_F16;
        else if (strcmp(v, "hf") == 0) o->weights_format = BC_WEIGHTS_HF;
        else *ok = 0;
    } else if (strcmp(a, "--chat-targets") == 0) {
        if (strcmp(v, "assistant") == 0) o->chat_all = 0;
        else if (strcmp(v, "all") == 0) o->chat_all = 1;
        else *ok = 0;
    } else
        return 0;
    return 1;
}

/* ------------------------------------------------------------------ files */

static char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = (char *)malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t at = a;
    if (a == 0 || dir[a - 1] != '/') p[at++] = '/';
    memcpy(p + at, name, b + 1);
    return p;
}

/* mkdir -p; 1 on success, 0 after printing why. */
static int make_dirs(const char *path) {
    size_t n = strlen(path);
    char *p = (char *)malloc(n + 1);
    if (!p) return 0;
    memcpy(p, path, n + 1);
    for (size_t k = 1; k <= n; k++) {
        if (p[k] != '/' && p[k] != '\0') continue;
        char c = p[k];
        p[k] = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            fprintf(stderr, "batchcore finetune: cannot create %s: %s\n", p, strerror(errno));
            free(p);
            return 0;
        }
        p[k] = c;
    }
    free(p);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "batchcore finetune: %s is not a directory\n", path);
        return 0;
    }
    return 1;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* A Hugging Face model path as bc_model_load reads it: a directory or safetensors. */
static int is_hf_path(const char *path) {
    return is_dir(path) || ends_with(path, ".safetensors") || ends_with(path, ".safetensors.index.json");
}

/* The options a resumed run must share with the run it continues, as one line. */
static char *options_line(const finetune_opts *o) {
    char *s = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&s, &len);
    if (!f) return NULL;
    fprintf(f, "optimizer=%s lr=%.17g weight_decay=", o->optimizer, o->lr);
    if (o->have_weight_decay) fprintf(f, "%.17g", o->weight_decay);
    else fputs("default", f);
    fprintf(f, " schedule=%s warmup=%ld min_lr=%.17g decay_steps=%ld max_grad_norm=%.17g", o->schedule, o->warmup,
            o->min_lr, o->decay_steps, o->max_grad_norm);
    fprintf(f, " micro_batch_tokens=%ld accumulation=%ld epochs=%ld seed=%llu max_tokens=%ld truncate=%d", o->micro_batch_tokens,
            o->accumulation, o->epochs, o->seed, o->max_tokens, o->truncate);
    fprintf(f, " skip_invalid=%d chat_targets=%s eval_fraction=", o->skip_invalid, o->chat_all ? "all" : "assistant");
    if (o->have_eval_fraction) fprintf(f, "%.17g", o->eval_fraction);
    else fputs("0", f);
    if (o->gradient_delay) fprintf(f, " gradient_delay=%ld", o->gradient_delay);   /* absent when 0, as below */
    if (o->lora_rank) { /* absent for a full fine-tune: run.json files of those stay valid */
        fprintf(f, " lora=r=%u,alpha=%.9g,targets=", o->lora_rank, (double)(float)o->lora_alpha);
        int first = 1;
        for (size_t k = 0; k < sizeof lora_targets / sizeof lora_targets[0]; k++)
            if (o->lora_targets & lora_targets[k].bit) { fprintf(f, "%s%s", first ? "" : "+", lora_targets[k].name); first = 0; }
        fprintf(f, ",rslora=%d,seed=%llu", o->lora_rslora, o->lora_seed);
        if (o->lora_dropout != 0) fprintf(f, ",dropout=%.9g", (double)(float)o->lora_dropout);   /* absent when 0 */
    }
    if (o->batch_mode != BC_BATCH_FIXED) /* absent when fixed: older run.json files stay valid */
        fprintf(f, " batch=%s,min=%ld,max=%ld,ramp=%ld,lr_scaling=%s,ema=%.17g,warmup=%ld", batch_modes[o->batch_mode],
                o->min_micro_batches, o->max_micro_batches, o->ramp_steps, lr_scalings[o->lr_scaling], o->noise_ema,
                o->noise_warmup);
    if (fclose(f) != 0) { free(s); return NULL; }
    return s;
}

/* What run.json keeps: the options and the evaluations before training. */
typedef struct baseline {
    double eval_loss, forget_loss; /* NaN: not measured */
    int64_t eval_targets, forget_targets;
} baseline;

static void write_json_field(FILE *f, const char *key, double v, int comma) {
    fprintf(f, "%s\"%s\":", comma ? "," : "", key);
    json_write_number(f, v);
}

/* Writes DIR/run.json atomically (temporary file + rename). 1 on success. */
static int write_run_file(const char *path, const char *options, const finetune_opts *o, const baseline *b) {
    size_t n = strlen(path);
    char *tmp = (char *)malloc(n + 5);
    if (!tmp) return 0;
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", 5);
    FILE *f = fopen(tmp, "w");
    if (!f) { fprintf(stderr, "batchcore finetune: cannot write %s: %s\n", tmp, strerror(errno)); free(tmp); return 0; }
    fputs("{\"options\":", f);
    cli_json_string(f, options, strlen(options));
    fputs(",\"data\":", f);
    cli_json_string(f, o->data, strlen(o->data));
    fputs(",\"eval\":", f);
    if (o->eval) cli_json_string(f, o->eval, strlen(o->eval));
    else fputs("null", f);
    fputs(",\"forget_eval\":", f);
    if (o->forget) cli_json_string(f, o->forget, strlen(o->forget));
    else fputs("null", f);
    write_json_field(f, "eval_loss_before", b->eval_loss, 1);
    write_json_field(f, "eval_targets_before", (double)b->eval_targets, 1);
    write_json_field(f, "forget_loss_before", b->forget_loss, 1);
    write_json_field(f, "forget_targets_before", (double)b->forget_targets, 1);
    fputs("}\n", f);
    int ok = !ferror(f);
    if (fclose(f) != 0) ok = 0;
    if (ok && rename(tmp, path) != 0) ok = 0;
    if (!ok) { fprintf(stderr, "batchcore finetune: cannot write %s: %s\n", path, strerror(errno)); remove(tmp); }
    free(tmp);
    return ok;
}

/* Reads run.json: 1 = read (*b filled, *options malloc'd), 0 = missing, -1 = unreadable (printed). */
static int read_run_file(const char *path, char **options, char **forget, baseline *b) {
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? 0 : (fprintf(stderr, "batchcore finetune: cannot read %s: %s\n", path, strerror(errno)), -1);
    size_t len = 0;
    char *text = cli_read_all(f, &len);
    fclose(f);
    if (!text) return -1;
    char err[200];
    json_value *v = json_parse(text, len, err, sizeof err);
    free(text);
    const json_value *opt = v ? json_get(v, "options") : NULL;
    if (!v || !opt || opt->type != JSON_STRING) {
        fprintf(stderr, "batchcore finetune: %s is not a run file of finetune%s%s\n", path, v ? "" : ": ", v ? "" : err);
        json_free(v);
        return -1;
    }
    *options = (char *)malloc(opt->len + 1);
    const json_value *fg = json_get(v, "forget_eval");
    *forget = NULL;
    if (fg && fg->type == JSON_STRING) {
        *forget = (char *)malloc(fg->len + 1);
        if (*forget) memcpy(*forget, fg->text, fg->len + 1);
    }
    if (*options) memcpy(*options, opt->text, opt->len + 1);
    const json_value *x;
    b->eval_loss = (x = json_get(v, "eval_loss_before")) && x->type == JSON_NUMBER ? x->number : NAN;
    b->forget_loss = (x = json_get(v, "forget_loss_before")) && x->type == JSON_NUMBER ? x->number : NAN;
    b->eval_targets = (x = json_get(v, "eval_targets_before")) && x->type == JSON_NUMBER ? (int64_t)x->number : 0;
    b->forget_targets = (x = json_get(v, "forget_targets_before")) && x->type == JSON_NUMBER ? (int64_t)x->number : 0;
    json_free(v);
    return *options ? 1 : -1;
}

/* ------------------------------------------------------------------ output */

static double mib(uint64_t bytes) { return (double)bytes / (1024.0 * 1024.0); }

static double ppl(double loss) { return isfinite(loss) ? exp(loss) : NAN; }

static void print_memory(const bc_trainer_memory *m, const finetune_opts *o, int quiet) {
    printf("{\"memory\":{\"model_weights\":%llu,\"trainable_copies\":%llu,\"gradients\":%llu,\"activations\":%llu,"
           "\"backward_buffers\":%llu,\"optimizer_state\":%llu,",
           (unsigned long long)m->model_weights, (unsigned long long)m->trainable_copies, (unsigned long long)m->gradients,
           (unsigned long long)m->activations, (unsigned long long)m->backward_buffers,
           (unsigned long long)m->optimizer_state);
    if (m->delayed_gradients) printf("\"delayed_gradients\":%llu,", (unsigned long long)m->delayed_gradients);
    printf("\"added\":%llu}}\n", (unsigned long long)m->added);
    fflush(stdout);
    if (quiet) return;
    if (o->lora_rank) {
        fprintf(stderr, "LoRA: rank %u, alpha %g (scale %g%s), adapters on", o->lora_rank, o->lora_alpha,
                o->lora_rslora ? o->lora_alpha / sqrt((double)o->lora_rank) : o->lora_alpha / o->lora_rank,
                o->lora_rslora ? ", rsLoRA" : "");
        for (size_t k = 0; k < sizeof lora_targets / sizeof lora_targets[0]; k++)
            if (o->lora_targets & lora_targets[k].bit) fprintf(stderr, " %s", lora_targets[k].module);
        if (o->lora_dropout != 0) fprintf(stderr, ", dropout %g", o->lora_dropout);
        fprintf(stderr, "; the base weights stay frozen\n");
    }
    fprintf(stderr,
            "memory: model weights %.1f MiB (loaded) + trainable copies %.1f + gradients %.1f + activations %.1f"
            " + backward buffers %.1f + optimizer state %.1f",
            mib(m->model_weights), mib(m->trainable_copies), mib(m->gradients), mib(m->activations),
            mib(m->backward_buffers), mib(m->optimizer_state));
    if (m->delayed_gradients) fprintf(stderr, " + delayed gradients %.1f (--gradient-delay %ld)", mib(m->delayed_gradients),
                                      o->gradient_delay);
    fprintf(stderr, " = %.1f MiB added\n", mib(m->added));
}

static void print_data(const bc_train_data_info *d, const bc_train_data_info *e, int quiet) {
    long long eval_examples = e ? (long long)e->examples : (long long)d->eval_examples;
    printf("{\"data\":{\"examples\":%lld,\"tokens\":%lld,\"targets\":%lld,\"truncated\":%lld,\"skipped\":%lld,"
           "\"eval_examples\":%lld,\"steps\":%lld}}\n",
           (long long)d->examples, (long long)d->tokens, (long long)d->targets, (long long)d->truncated,
           (long long)d->skipped, eval_examples, (long long)d->steps);
    fflush(stdout);
    if (quiet) return;
    fprintf(stderr, "data: %lld examples, %lld tokens (%lld targets), %lld truncated, %lld invalid lines skipped; ",
            (long long)d->examples, (long long)d->tokens, (long long)d->targets, (long long)d->truncated,
            (long long)d->skipped);
    if (e)
        fprintf(stderr, "eval file: %lld examples, %lld tokens (%lld targets, %lld truncated, %lld skipped); ",
                (long long)e->examples, (long long)e->tokens, (long long)e->targets, (long long)e->truncated,
                (long long)e->skipped);
    else
        fprintf(stderr, "eval: %lld examples held out; ", eval_examples);
    fprintf(stderr, "%lld steps\n", (long long)d->steps);
}

static void format_duration(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) { snprintf(buf, n, "?"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%lds", t);
}

/* "  WHAT: loss B -> A, perplexity B -> A" with "-" for what was not measured. */
static void summary_line(const char *what, double before, double after) {
    char b[4][32];
    const double v[4] = {before, after, ppl(before), ppl(after)};
    for (int k = 0; k < 4; k++) {
        if (isfinite(v[k])) snprintf(b[k], sizeof b[k], k < 2 ? "%.4f" : "%.3f", v[k]);
        else snprintf(b[k], sizeof b[k], "-");
    }
    fprintf(stderr, "  %s: loss %s -> %s, perplexity %s -> %s\n", what, b[0], b[1], b[2], b[3]);
}

/* ------------------------------------------------------------------ run */

typedef struct run {
    finetune_opts *o;
    bc_trainer *trainer;
    bc_optimizer *opt;
    int quiet, tty, line_shown;
    bc_train_data_params dp;
} run;

static void clear_line(run *r) {
    if (r->line_shown && r->tty) fprintf(stderr, "\r%100s\r", "");
    r->line_shown = 0;
}

/* Evaluates the eval set (path NULL) or a file; writes its record. 1 ok, 0 error (reported). */
static int evaluate(run *r, const char *path, int64_t step, const char *prefix, bc_train_result *res) {
    memset(res, 0, sizeof *res);
    res->struct_size = sizeof *res;
    bc_train_data_params dp = r->dp;
    dp.eval_fraction = 0;
    bc_status st = bc_trainer_evaluate_data(r->trainer, path, path ? &dp : NULL, res);
    if (st != BC_OK) {
        clear_line(r);
        cli_report(path ? "evaluate --forget-eval" : "evaluate", st);
        return 0;
    }
    printf("{\"step\":%lld,\"%s_loss\":", (long long)step, prefix);
    json_write_number(stdout, res->loss);
    printf(",\"%s_ppl\":", prefix);
    json_write_number(stdout, ppl(res->loss));
    printf(",\"%s_targets\":%lld}\n", prefix, (long long)res->targets);
    fflush(stdout);
    if (!r->quiet) {
        clear_line(r);
        fprintf(stderr, "step %lld: %s loss %.4f, perplexity %.3f (%lld targets)\n", (long long)step, prefix, res->loss,
                ppl(res->loss), (long long)res->targets);
    }
    return 1;
}

int cmd_finetune(int argc, char **argv) {
    cli_model_opts mo = {NULL, 0, 0};
    finetune_opts o;
    memset(&o, 0, sizeof o);
    o.optimizer = "adamw";
    o.algorithm = BC_OPTIM_ADAMW;
    o.lr = 1e-4;
    o.max_grad_norm = 1.0;
    o.schedule = "constant";
    o.schedule_kind = BC_LR_CONSTANT;
    o.micro_batch_tokens = 2048;
    o.accumulation = 1;
    o.epochs = 1;
    o.weights_format = -1; /* by the model's format */
    o.batch_mode = BC_BATCH_FIXED;
    o.lr_scaling = -1;
    o.noise_ema = 0.9;
    o.noise_warmup = 3;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { finetune_usage(stdout); return EXIT_OK; }
        if (strcmp(a, "--recompute") == 0) { o.recompute = 1; continue; }
        if (strcmp(a, "--resume") == 0) { o.resume = 1; continue; }
        if (strcmp(a, "--truncate") == 0) { o.truncate = 1; continue; }
        if (strcmp(a, "--skip-invalid") == 0) { o.skip_invalid = 1; continue; }
        if (strcmp(a, "--lora") == 0) {
            if (!v) return cli_bad_value("finetune", a, v);
            if (o.lora_rank) { fprintf(stderr, "batchcore finetune: --lora given twice\n"); return EXIT_USAGE; }
            if (!parse_lora(v, &o)) return EXIT_USAGE;
            i++;
            continue;
        }
        int r = cli_model_option("finetune", argc, argv, &i, &mo);
        if (r < 0) return EXIT_USAGE;
        if (r > 0) continue;
        int ok = v != NULL;
        if (!finetune_option(a, v ? v : "", &o, &ok)) {
            fprintf(stderr, "batchcore finetune: unknown option '%s'\n", a);
            fprintf(stderr, "Run 'batchcore finetune --help' for the options.\n");
            return EXIT_USAGE;
        }
        if (!ok) return cli_bad_value("finetune", a, v);
        i++;
    }
    if (!o.data || !o.out) {
        fprintf(stderr, "batchcore finetune: %s is required\nRun 'batchcore finetune --help' for the options.\n",
                !o.data ? "--data FILE" : "--out DIR");
        return EXIT_USAGE;
    }
    if (o.eval && o.have_eval_fraction && o.eval_fraction > 0) {
        fprintf(stderr, "batchcore finetune: give --eval FILE or --eval-fraction F, not both\n");
        return EXIT_USAGE;
    }
    if (o.decay_steps && o.schedule_kind != BC_LR_WSD) {
        fprintf(stderr, "batchcore finetune: --decay-steps applies to --schedule wsd only\n");
        return EXIT_USAGE;
    }

    if (o.batch_mode == BC_BATCH_FIXED && (o.min_micro_batches || o.max_micro_batches || o.ramp_steps || o.lr_scaling >= 0)) {
        fprintf(stderr, "batchcore finetune: --min/--max-micro-batches, --ramp-steps and --lr-scaling need --batch-control ramp or noise\n");
        return EXIT_USAGE;
    }
    if (o.ramp_steps && o.batch_mode != BC_BATCH_RAMP) {
        fprintf(stderr, "batchcore finetune: --ramp-steps applies to --batch-control ramp only\n");
        return EXIT_USAGE;
    }
    if (o.batch_mode != BC_BATCH_FIXED) {
        if (!o.min_micro_batches) o.min_micro_batches = o.accumulation;
        if (o.batch_mode == BC_BATCH_NOISE && o.min_micro_batches < 2) o.min_micro_batches = 2;
        if (!o.max_micro_batches) o.max_micro_batches = 8 * o.min_micro_batches > 65536 ? 65536 : 8 * o.min_micro_batches;
        if (o.max_micro_batches < o.min_micro_batches) {
            fprintf(stderr, "batchcore finetune: --max-micro-batches %ld is below the lower bound %ld\n", o.max_micro_batches,
                    o.min_micro_batches);
            return EXIT_USAGE;
        }
        if (o.lr_scaling < 0) o.lr_scaling = o.algorithm == BC_OPTIM_SGD ? BC_LR_SCALE_LINEAR : BC_LR_SCALE_SQRT;
    }

    /* The output format follows the model's unless given; GGUF output needs GGUF metadata
     * (the tokenizer), so a Hugging Face model can only be written as hf: refused here,
     * before training, not after. The path is the one cli_load_model resolves. */
    {
        const char *mp = mo.path ? mo.path : getenv("BATCHCORE_MODEL");
        int hf_model = mp && mp[0] && is_hf_path(mp);
        if (o.lora_rank && o.weights_format >= 0) {
            fprintf(stderr, "batchcore finetune: --format applies to a full fine-tune; --lora writes the adapter "
                            "(a PEFT directory)\n");
            return EXIT_USAGE;
        } else if (o.lora_rank) {
            o.format = "peft";
        } else if (o.weights_format < 0) {
            o.weights_format = hf_model ? BC_WEIGHTS_HF : BC_WEIGHTS_GGUF_F32;
            o.format = hf_model ? "hf" : "gguf-f32";
        } else if (hf_model && o.weights_format != BC_WEIGHTS_HF) {
            fprintf(stderr, "batchcore finetune: --format %s needs a GGUF model; %s is a Hugging Face model: use --format hf\n",
                    o.format, mp);
            return EXIT_USAGE;
        }
    }

    int rc = EXIT_OK;
    bc_status st;
    bc_model *model = NULL;
    bc_trainer *trainer = NULL;
    bc_optimizer *opt = NULL;
    char *options = NULL, *run_path = NULL, *ckpt_path = NULL, *model_path = NULL, *old_options = NULL, *old_forget = NULL;
    run r;
    memset(&r, 0, sizeof r);
    r.o = &o;
    r.quiet = mo.quiet;
    r.tty = isatty(STDERR_FILENO);
    baseline before = {NAN, NAN, 0, 0};
    bc_train_result after_eval, after_forget;
    int have_after_eval = 0, have_after_forget = 0;
    int64_t resumed_from = -1, steps_this_run = 0, skipped_steps = 0, tokens_this_run = 0;
    double started = cli_now(), train_seconds = 0;
    int stop = 0, saved_checkpoint = 0, saved_model = 0;
    bc_train_progress pr;
    memset(&pr, 0, sizeof pr);
    pr.struct_size = sizeof pr;

    options = options_line(&o);
    run_path = path_join(o.out, "run.json");
    ckpt_path = path_join(o.out, "checkpoint");
    model_path = path_join(o.out, o.lora_rank ? "adapter" : o.weights_format == BC_WEIGHTS_HF ? "model" : "model.gguf");
    if (!options || !run_path || !ckpt_path || !model_path) { fprintf(stderr, "batchcore finetune: out of memory\n"); rc = EXIT_FAIL; goto out; }

    if (o.resume) {
        if (!is_dir(ckpt_path)) {
            fprintf(stderr, "batchcore finetune: --resume: no checkpoint at %s\n", ckpt_path);
            rc = EXIT_FAIL;
            goto out;
        }
        /* The evaluations before training come from run.json (null without it): evaluating
         * now would measure the checkpoint, not the model before training. */
        int got = read_run_file(run_path, &old_options, &old_forget, &before);
        if (got < 0) { rc = EXIT_FAIL; goto out; }
        if (got == 0) {
            if (!mo.quiet) fprintf(stderr, "batchcore finetune: warning: no %s: the options cannot be compared\n", run_path);
        } else if (strcmp(old_options, options) != 0) {
            fprintf(stderr, "batchcore finetune: --resume: the options differ from the run in %s:\n  was: %s\n  now: %s\n",
                    o.out, old_options, options);
            rc = EXIT_FAIL;
            goto out;
        } else if ((o.forget == NULL) != (old_forget == NULL) || (o.forget && strcmp(o.forget, old_forget) != 0)) {
            before.forget_loss = NAN; /* another forget file than the one measured before */
        }
    } else if (!make_dirs(o.out)) {
        rc = EXIT_FAIL;
        goto out;
    }

    /* From here on the first SIGINT/SIGTERM stops after the current step. */
    if (!cli_catch_stop_signals(1)) { rc = EXIT_FAIL; goto out; }
    if ((st = bc_set_num_threads((int32_t)o.threads)) != BC_OK) { cli_report("set threads", st); rc = EXIT_FAIL; goto out; }
    mo.dequantize = 1; /* training needs float32 weights */
    if ((rc = cli_load_model(&mo, &model)) != EXIT_OK) goto out;

    bc_trainer_params tp;
    if ((st = bc_trainer_params_default(&tp, sizeof tp)) != BC_OK) { cli_report("trainer defaults", st); rc = EXIT_FAIL; goto out; }
    tp.micro_batch_tokens = (uint32_t)o.micro_batch_tokens;
    tp.accumulation_steps = (uint32_t)o.accumulation;
    tp.recompute = o.recompute;
    tp.compute_type = o.compute_bf16 ? BC_COMPUTE_BF16 : BC_COMPUTE_F32;
    tp.gradient_delay = (uint32_t)o.gradient_delay;
    tp.memory_limit = o.memory_limit;
    tp.lora_rank = o.lora_rank;
    if (o.lora_rank) {
        tp.lora_alpha = (float)o.lora_alpha;
        tp.lora_targets = o.lora_targets;
        tp.use_rslora = o.lora_rslora;
        tp.lora_seed = (uint64_t)o.lora_seed;
        tp.lora_dropout = (float)o.lora_dropout;
    }
    for (size_t k = 0; k < sizeof optimizers / sizeof optimizers[0]; k++)
        if (optimizers[k].algorithm == o.algorithm) tp.optimizer_slots = optimizers[k].slots;
    bc_trainer_memory mem;
    memset(&mem, 0, sizeof mem);
    mem.struct_size = sizeof mem;
    if ((st = bc_trainer_estimate(model, &tp, &mem)) != BC_OK) { cli_report("trainer memory estimate", st); rc = EXIT_FAIL; goto out; }
    print_memory(&mem, &o, mo.quiet);
    if ((st = bc_trainer_create(model, &tp, &trainer)) != BC_OK) { cli_report("create trainer", st); rc = EXIT_FAIL; goto out; }
    r.trainer = trainer;

    bc_optim_hparams hp;
    if ((st = bc_optim_hparams_default(o.algorithm, &hp, sizeof hp)) != BC_OK) { cli_report("optimizer defaults", st); rc = EXIT_FAIL; goto out; }
    hp.lr = o.lr;
    if (o.have_weight_decay) hp.weight_decay = o.weight_decay;
    uint32_t group = 0;
    if ((st = bc_optimizer_create(o.algorithm, &opt)) != BC_OK || (st = bc_optimizer_add_group(opt, &hp, &group)) != BC_OK ||
        (st = bc_trainer_register(trainer, opt, group)) != BC_OK) {
        cli_report("optimizer", st);
        rc = EXIT_FAIL;
        goto out;
    }
    r.opt = opt;

    /* Data. */
    if ((st = bc_train_data_params_default(&r.dp, sizeof r.dp)) != BC_OK) { cli_report("data defaults", st); rc = EXIT_FAIL; goto out; }
    r.dp.max_tokens = (uint32_t)o.max_tokens;
    r.dp.chat_targets = o.chat_all;
    r.dp.truncate = o.truncate;
    r.dp.skip_invalid = o.skip_invalid;
    r.dp.eval_fraction = o.have_eval_fraction ? (float)o.eval_fraction : 0.0f;
    r.dp.seed = (uint64_t)o.seed;
    r.dp.epochs = (uint32_t)o.epochs;
    bc_train_data_info di, ei;
    memset(&di, 0, sizeof di);
    di.struct_size = sizeof di;
    memset(&ei, 0, sizeof ei);
    ei.struct_size = sizeof ei;
    if ((st = bc_trainer_load_data(trainer, o.data, &r.dp, &di)) != BC_OK) { cli_report("--data", st); rc = EXIT_FAIL; goto out; }
    if (o.eval) {
        bc_train_data_params ep = r.dp;
        ep.eval_fraction = 0;
        if ((st = bc_trainer_load_eval(trainer, o.eval, &ep, &ei)) != BC_OK) { cli_report("--eval", st); rc = EXIT_FAIL; goto out; }
    }
    print_data(&di, o.eval ? &ei : NULL, mo.quiet);
    if (o.batch_mode != BC_BATCH_FIXED) {
        bc_batch_control bc;
        if ((st = bc_batch_control_default(&bc, sizeof bc)) != BC_OK) { cli_report("batch control defaults", st); rc = EXIT_FAIL; goto out; }
        bc.mode = o.batch_mode;
        bc.min_micro_batches = (uint32_t)o.min_micro_batches;
        bc.max_micro_batches = (uint32_t)o.max_micro_batches;
        bc.ramp_steps = o.batch_mode == BC_BATCH_RAMP ? (o.ramp_steps ? o.ramp_steps : (di.steps / 4 > 0 ? di.steps / 4 : 1)) : 0;
        bc.lr_scaling = o.lr_scaling;
        bc.noise_ema = o.noise_ema;
        bc.warmup_steps = (uint32_t)o.noise_warmup;
        if ((st = bc_trainer_set_batch_control(trainer, &bc)) != BC_OK) { cli_report("--batch-control", st); rc = EXIT_FAIL; goto out; }
        if (!mo.quiet)
            fprintf(stderr, "batch: %s, %u..%u micro-batches of %ld tokens (base %ld), learning rate x %s(kappa); "
                            "the step count above is an upper bound\n",
                    batch_modes[o.batch_mode], bc.min_micro_batches, bc.max_micro_batches, o.micro_batch_tokens,
                    o.accumulation, lr_scalings[o.lr_scaling]);
    }
    const int64_t eval_examples = o.eval ? ei.examples : di.eval_examples;

    /* The learning-rate schedule over the run's steps, checked before anything runs. */
    bc_lr_schedule sched;
    if ((st = bc_lr_schedule_default(&sched, sizeof sched)) != BC_OK) { cli_report("schedule defaults", st); rc = EXIT_FAIL; goto out; }
    sched.kind = o.schedule_kind;
    sched.base_lr = o.lr;
    sched.min_lr = o.schedule_kind == BC_LR_CONSTANT ? o.lr : o.min_lr;
    sched.warmup_steps = o.warmup;
    sched.total_steps = di.steps > o.warmup ? di.steps : o.warmup;
    if (o.schedule_kind == BC_LR_WSD) {
        int64_t d = o.decay_steps ? o.decay_steps : (di.steps - o.warmup) / 5;
        sched.decay_steps = d >= 1 ? d : 1;
    }
    double lr0 = 0;
    if (o.warmup > di.steps) {
        fprintf(stderr, "batchcore finetune: --warmup-steps %ld is longer than the run (%lld steps)\n", o.warmup,
                (long long)di.steps);
        rc = EXIT_USAGE;
        goto out;
    }
    if ((st = bc_lr_schedule_eval(&sched, 0, &lr0)) != BC_OK) {
        fprintf(stderr, "batchcore finetune: the learning-rate schedule over %lld steps: %s\n", (long long)di.steps,
                cli_error_text());
        rc = EXIT_USAGE;
        goto out;
    }

    if (o.resume) {
        if ((st = bc_trainer_load_checkpoint(trainer, opt, ckpt_path)) != BC_OK) { cli_report("--resume", st); rc = EXIT_FAIL; goto out; }
        if ((st = bc_trainer_get_progress(trainer, &pr)) != BC_OK) { cli_report("progress", st); rc = EXIT_FAIL; goto out; }
        resumed_from = pr.step;
        if (!mo.quiet) fprintf(stderr, "resumed from %s at step %lld of %lld\n", ckpt_path, (long long)pr.step, (long long)pr.steps);
    }

    /* Evaluations before training. A resumed run reuses those of run.json; one resumed
     * at step 0 (stopped before its first step) still has the base weights and measures
     * what is missing. */
    if (!o.resume || (resumed_from == 0 && ((eval_examples > 0 && isnan(before.eval_loss)) || (o.forget && isnan(before.forget_loss))))) {
        bc_train_result res;
        if (eval_examples > 0 && isnan(before.eval_loss) && !cli_stop_signal()) {
            if (!evaluate(&r, NULL, 0, "eval", &res)) { rc = EXIT_FAIL; goto out; }
            before.eval_loss = res.loss;
            before.eval_targets = res.targets;
        }
        if (o.forget && isnan(before.forget_loss) && !cli_stop_signal()) {
            if (!evaluate(&r, o.forget, 0, "forget", &res)) { rc = EXIT_FAIL; goto out; }
            before.forget_loss = res.loss;
            before.forget_targets = res.targets;
        }
        if (!write_run_file(run_path, options, &o, &before)) { rc = EXIT_FAIL; goto out; }
    }

    bc_optim_step_params sp;
    if ((st = bc_optim_step_params_default(&sp, sizeof sp)) != BC_OK) { cli_report("step defaults", st); rc = EXIT_FAIL; goto out; }
    sp.max_grad_norm = o.max_grad_norm;

    /* Training. */
    double t0 = cli_now();
    for (;;) {
        if (cli_stop_signal()) { stop = cli_stop_signal(); break; }
        if ((st = bc_trainer_get_progress(trainer, &pr)) != BC_OK) { cli_report("progress", st); rc = EXIT_FAIL; goto out; }
        const int64_t before_step = pr.step, before_tokens = pr.tokens, before_example = pr.example, before_epoch = pr.epoch;
        double lr = 0;
        int64_t at = pr.step < sched.total_steps ? pr.step : sched.total_steps;
        if ((st = bc_lr_schedule_eval(&sched, at, &lr)) != BC_OK) { cli_report("learning-rate schedule", st); rc = EXIT_FAIL; goto out; }
        if ((st = bc_optimizer_set_lr(opt, BC_ALL_GROUPS, lr)) != BC_OK) { cli_report("set learning rate", st); rc = EXIT_FAIL; goto out; }
        bc_train_result tot;
        memset(&tot, 0, sizeof tot);
        tot.struct_size = sizeof tot;
        bc_optim_step_result sr;
        memset(&sr, 0, sizeof sr);
        sr.struct_size = sizeof sr;
        sr.grad_norm = NAN;
        double s0 = cli_now();
        st = bc_trainer_train_step(trainer, opt, &sp, &tot, &sr);
        double dt = cli_now() - s0;
        if (st == BC_E_NOT_FOUND) break; /* every epoch done */
        int skipped = st == BC_E_NON_FINITE;
        if (st != BC_OK && !skipped) { clear_line(&r); cli_report("training step", st); rc = EXIT_FAIL; goto out; }
        if ((st = bc_trainer_get_progress(trainer, &pr)) != BC_OK) { cli_report("progress", st); rc = EXIT_FAIL; goto out; }
        bc_batch_stats bs;
        memset(&bs, 0, sizeof bs);
        bs.struct_size = sizeof bs;
        if ((st = bc_trainer_get_batch_stats(trainer, &bs)) != BC_OK) { cli_report("batch stats", st); rc = EXIT_FAIL; goto out; }
        if (skipped && pr.step == before_step && pr.tokens == before_tokens && pr.example == before_example &&
            pr.epoch == before_epoch) {
            clear_line(&r);
            fprintf(stderr, "batchcore finetune: a skipped step did not advance the data; stopping\n");
            rc = EXIT_FAIL;
            goto out;
        }
        steps_this_run++;
        tokens_this_run += tot.tokens;
        if (skipped) skipped_steps++;
        const int64_t step = pr.step > before_step ? pr.step : before_step + 1;
        const double tps = dt > 0 ? (double)tot.tokens / dt : NAN;
        printf("{\"step\":%lld,\"steps\":%lld,\"epoch\":%lld,\"loss\":", (long long)step, (long long)pr.steps, (long long)pr.epoch);
        json_write_number(stdout, tot.loss);
        printf(",\"tokens\":%lld,\"targets\":%lld,\"lr\":", (long long)tot.tokens, (long long)tot.targets);
        json_write_number(stdout, lr * bs.lr_scale); /* the rate the step used */
        printf(",\"micro_batches\":%lld,\"next_micro_batches\":%lld,\"small_targets\":%lld,\"kappa\":",
               (long long)bs.micro_batches, (long long)bs.next_micro_batches, (long long)bs.small_targets);
        json_write_number(stdout, bs.kappa);
        fputs(",\"noise_scale\":", stdout);
        json_write_number(stdout, bs.noise_scale);
        fputs(",\"grad_sq\":", stdout);
        json_write_number(stdout, bs.grad_sq);
        fputs(",\"trace\":", stdout);
        json_write_number(stdout, bs.trace);
        fputs(",\"grad_norm\":", stdout);
        json_write_number(stdout, sr.grad_norm);
        fputs(",\"tokens_per_s\":", stdout);
        if (isfinite(tps)) printf("%.1f", tps);
        else fputs("null", stdout);
        printf(",\"seconds\":%.4f%s%s}\n", dt, skipped ? ",\"skipped\":true" : "",
               o.gradient_delay && !skipped && !sr.applied ? ",\"applied\":false" : "");
        fflush(stdout);
        if (ferror(stdout)) { fprintf(stderr, "batchcore finetune: writing to stdout failed\n"); rc = EXIT_FAIL; goto out; }
        if (!mo.quiet) {
            double el = cli_now() - t0;
            double rate = el > 0 ? (double)tokens_this_run / el : 0;
            char eta[32];
            format_duration(eta, sizeof eta, el / (double)steps_this_run * (double)(pr.steps - step));
            if (skipped) {
                clear_line(&r);
                fprintf(stderr, "step %lld: non-finite loss or gradient: skipped (weights unchanged)\n", (long long)step);
            }
            char noise[32];
            if (isfinite(bs.noise_scale)) snprintf(noise, sizeof noise, "%.0f", bs.noise_scale);
            else snprintf(noise, sizeof noise, "-");
            fprintf(stderr, "%sstep %lld/%lld  loss %.4f  %.0f tok/s  lr %.3g  grad norm %.3g  batch %lldx%ld  noise %s  ETA %s%s",
                    r.tty ? "\r" : "", (long long)step, (long long)pr.steps, tot.loss, rate, lr * bs.lr_scale, sr.grad_norm,
                    (long long)bs.micro_batches, o.micro_batch_tokens, noise, eta, r.tty ? "    " : "\n");
            fflush(stderr);
            r.line_shown = 1;
        }
        const int last = pr.step >= pr.steps;
        if (o.eval_every > 0 && step % o.eval_every == 0 && !last && eval_examples > 0 && !cli_stop_signal()) {
            bc_train_result res;
            if (!evaluate(&r, NULL, step, "eval", &res)) { rc = EXIT_FAIL; goto out; }
        }
        if (o.checkpoint_every > 0 && step % o.checkpoint_every == 0 && !last && !cli_stop_signal()) {
            if ((st = bc_trainer_save_checkpoint(trainer, opt, ckpt_path)) != BC_OK) { clear_line(&r); cli_report("checkpoint", st); rc = EXIT_FAIL; goto out; }
        }
    }
    train_seconds = cli_now() - t0;
    clear_line(&r);
    if ((st = bc_trainer_get_progress(trainer, &pr)) != BC_OK) { cli_report("progress", st); rc = EXIT_FAIL; goto out; }

    /* The checkpoint (also on a stop), then the final evaluations and the model. */
    if (steps_this_run > 0 || !o.resume) {
        if ((st = bc_trainer_save_checkpoint(trainer, opt, ckpt_path)) != BC_OK) { cli_report("checkpoint", st); rc = EXIT_FAIL; goto out; }
        saved_checkpoint = 1;
    } else {
        saved_checkpoint = is_dir(ckpt_path);
    }
    if (!stop) {
        if (eval_examples > 0) {
            if (!evaluate(&r, NULL, pr.step, "eval", &after_eval)) { rc = EXIT_FAIL; goto out; }
            have_after_eval = 1;
        }
        if (o.forget) {
            if (!evaluate(&r, o.forget, pr.step, "forget", &after_forget)) { rc = EXIT_FAIL; goto out; }
            have_after_forget = 1;
        }
        stop = cli_stop_signal();
    }
    if (!stop) {
        st = o.lora_rank ? bc_trainer_save_adapter(trainer, model_path)
                         : bc_trainer_save_model(trainer, model_path, (bc_weights_format)o.weights_format);
        if (st != BC_OK) {
            cli_report(o.lora_rank ? "save adapter" : "save model", st);
            rc = EXIT_FAIL;
            goto out;
        }
        saved_model = 1;
    }

    /* Summary. */
    {
        double ea = have_after_eval ? after_eval.loss : NAN, fa = have_after_forget ? after_forget.loss : NAN;
        double secs = cli_now() - started;
        printf("{\"summary\":{\"steps\":%lld,\"total_steps\":%lld,\"tokens\":%lld,\"tokens_this_run\":%lld,\"seconds\":",
               (long long)pr.step, (long long)pr.steps, (long long)pr.tokens, (long long)tokens_this_run);
        json_write_number(stdout, secs);
        fputs(",\"train_seconds\":", stdout);
        json_write_number(stdout, train_seconds);
        printf(",\"skipped_steps\":%lld", (long long)skipped_steps);
        fputs(",\"eval_loss_before\":", stdout);
        json_write_number(stdout, before.eval_loss);
        fputs(",\"eval_ppl_before\":", stdout);
        json_write_number(stdout, ppl(before.eval_loss));
        printf(",\"eval_loss_after\":");
        json_write_number(stdout, ea);
        fputs(",\"eval_ppl_after\":", stdout);
        json_write_number(stdout, ppl(ea));
        fputs(",\"forget_loss_before\":", stdout);
        json_write_number(stdout, before.forget_loss);
        fputs(",\"forget_ppl_before\":", stdout);
        json_write_number(stdout, ppl(before.forget_loss));
        fputs(",\"forget_loss_after\":", stdout);
        json_write_number(stdout, fa);
        fputs(",\"forget_ppl_after\":", stdout);
        json_write_number(stdout, ppl(fa));
        fputs(",\"resumed_from_step\":", stdout);
        if (resumed_from >= 0) printf("%lld", (long long)resumed_from);
        else fputs("null", stdout);
        fputs(",\"stopped_by\":", stdout);
        if (stop) printf("\"%s\"", cli_signal_name(stop));
        else fputs("null", stdout);
        fputs(",\"checkpoint\":", stdout);
        if (saved_checkpoint) cli_json_string(stdout, ckpt_path, strlen(ckpt_path));
        else fputs("null", stdout);
        fputs(",\"model\":", stdout);
        if (saved_model && !o.lora_rank) cli_json_string(stdout, model_path, strlen(model_path));
        else fputs("null", stdout);
        fputs(",\"adapter\":", stdout);
        if (saved_model && o.lora_rank) cli_json_string(stdout, model_path, strlen(model_path));
        else fputs("null", stdout);
        fputs("}}\n", stdout);
        fflush(stdout);
        if (!mo.quiet) {
            fprintf(stderr, "finetune: %lld/%lld steps (%lld this run, %lld skipped), %lld tokens this run, %.1f tok/s, %.2f s\n",
                    (long long)pr.step, (long long)pr.steps, (long long)steps_this_run, (long long)skipped_steps,
                    (long long)tokens_this_run, train_seconds > 0 ? (double)tokens_this_run / train_seconds : 0.0, secs);
            if (!isnan(before.eval_loss) || have_after_eval)
                summary_line("eval set (learned)", before.eval_loss, ea);
            if (o.forget) summary_line("forget set (forgot)", before.forget_loss, fa);
            if (saved_checkpoint) fprintf(stderr, "  checkpoint: %s\n", ckpt_path);
            if (saved_model) fprintf(stderr, "  %s: %s\n", o.lora_rank ? "adapter" : "model", model_path);
            if (stop) fprintf(stderr, "finetune: stopped by %s; continue with --resume\n", cli_signal_name(stop));
        }
        if (stop) rc = 128 + stop;
    }
out:
    if (fflush(stdout) != 0 || ferror(stdout)) {
        if (rc == EXIT_OK) { fprintf(stderr, "batchcore finetune: writing to stdout failed\n"); rc = EXIT_FAIL; }
    }
    bc_optimizer_free(opt); /* holds the trainer's buffers: freed first */
    bc_trainer_free(trainer);
    bc_model_free(model);
    free(options);
    free(run_path);
    free(ckpt_path);
    free(model_path);
    free(old_options);
    free(old_forget);
    return rc;
}
