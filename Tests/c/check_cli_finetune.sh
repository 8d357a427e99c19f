#!/usr/bin/env bash
# The installed CLI's `finetune` on the tiny Hugging Face model of the fixtures
# (Tests/fixtures/train/tiny_tied: its tokenizer knows a-z, A-Z, space, '.', ',' and 0-4,
# so the data below uses only those), in seconds, without python:
#  - a run exits 0; the eval loss after training is below the one before; stdout is
#    JSON lines of the documented kinds, one step record per step of the run; the
#    summary reports the forget perplexity before and after; --quiet leaves stderr empty;
#  - the written model (a Hugging Face directory by default for a Hugging Face model)
#    loads with batchcore info; GGUF output of a Hugging Face model is refused before
#    training (exit 2): it has no GGUF tokenizer metadata. (GGUF output of a GGUF model
#    is the library's bc_trainer_save_model, tested on the default model by the C and
#    Swift trainer tests; a full fine-tune of it is too slow for this check.)
#  - SIGINT after the first step record: the step ends, the checkpoint is written, the
#    summary says stopped_by SIGINT, exit 130; --resume continues to the same final step
#    count and the same final eval loss (bits: 17 digits) as a run never interrupted;
#    --resume with other options is refused; SIGTERM: the same, exit 143;
#  - an invalid JSON line exits 1 naming the line; --skip-invalid counts it instead;
#  - a memory limit below the trainer's statement exits 1 with the library's message;
#  - --lora r=16,alpha=32,targets=q,k,v,o,gate,up,down: exit 0, the eval loss goes down,
#    the memory statement adds less than the full fine-tune's, DIR/adapter holds a PEFT
#    adapter_config.json (r, lora_alpha, the seven target modules) and
#    adapter_model.safetensors (lora_A/lora_B of every target of every layer), no model;
#    an interrupted LoRA run resumed reaches the uninterrupted run's final step, eval loss
#    and adapter bytes; resuming with other --lora options (or none) is refused; bad
#    --lora specs (unknown key, r=0, bad or repeated target, repeated key, ...) exit 2
#    with a message and create nothing;
#  - --batch-control noise: every step record has the noise scale and the micro-batches;
#    a step's micro-batches are what the record before chose (next_micro_batches), in
#    [min, max], never shrinking, at most doubling; kappa = micro-batches / --accumulation
#    and lr = --lr x sqrt(kappa) (AdamW); the progress line shows batch and noise; the
#    batch grows on this data; a fixed run reports a noise scale with --accumulation 2;
#  - --gradient-delay 2: the memory statement has delayed_gradients = 2 x gradients, the
#    first 2 step records (only those) have "applied":false; --gradient-delay 65 exits 2;
#  - bad options exit 2; --help names every option.
set -uo pipefail
set -m # background jobs get the default SIGINT disposition (not ignored)
: "${STAGE:?set STAGE to an install prefix}"
here=$(cd "$(dirname "$0")" && pwd)
cli="$STAGE/bin/batchcore"
model="$here/../fixtures/train/tiny_tied"
[ -f "$model/config.json" ] || { echo "check_cli_finetune: no fixture model at $model"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
bad() { echo "check_cli_finetune: $*"; status=1; }
# run NAME args...: stdout $tmp/NAME.out, stderr $tmp/NAME.err, exit status in $rc.
run() {
    local name=$1; shift
    env -i "$cli" "$@" > "$tmp/$name.out" 2> "$tmp/$name.err"
    rc=$?
}
# field FILE KEY: the value of "KEY": in the summary record of FILE (text as written).
field() {
    grep '^{"summary":' "$1" | sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" | head -n 1
}
# less A B: 0 when the number A < B.
less() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 < b + 0) }'; }

# ---------------------------------------------------------------- data
# Training and eval sets: the same few sentence patterns (learnable); the forget set:
# another "domain" (digits and capitals).
subjects=(the\ cat the\ dog a\ bird my\ friend the\ old\ man a\ small\ child the\ teacher her\ brother)
verbs=(sat\ on ran\ to looked\ at walked\ past slept\ near jumped\ over)
objects=(the\ mat the\ house a\ tree the\ river the\ red\ car a\ green\ hill)
: > "$tmp/train.jsonl"
: > "$tmp/eval.jsonl"
for i in $(seq 0 47); do
    s=${subjects[$((i % 8))]} v=${verbs[$(((i * 5) % 6))]} o=${objects[$(((i * 7 + 1) % 6))]}
    line="{\"text\": \"$s $v $o, and $s was happy.\"}"
    if [ "$i" -lt 40 ]; then echo "$line" >> "$tmp/train.jsonl"; else echo "$line" >> "$tmp/eval.jsonl"; fi
done
: > "$tmp/forget.jsonl"
for i in $(seq 0 7); do
    echo "{\"text\": \"Q$((i % 5)) ZX 40$((i % 3)) KJW, VVB 1$((i % 4))2 PQ. XYZ $((i % 5))3 Z.\"}" >> "$tmp/forget.jsonl"
done

common=(-m "$model" -t 1 --micro-batch-tokens 128 --max-tokens 120 --lr 3e-3 --seed 7)

# ---------------------------------------------------------------- a full run
run full finetune "${common[@]}" --data "$tmp/train.jsonl" --eval "$tmp/eval.jsonl" \
    --forget-eval "$tmp/forget.jsonl" --out "$tmp/full" --epochs 4 --schedule cosine --warmup-steps 2
if [ "$rc" -ne 0 ]; then
    bad "finetune exit $rc, want 0: $(cat "$tmp/full.err")"
else
    before=$(field "$tmp/full.out" eval_loss_before) after=$(field "$tmp/full.out" eval_loss_after)
    less "$after" "$before" || bad "eval loss did not go down: before '$before', after '$after'"
    fb=$(field "$tmp/full.out" forget_ppl_before) fa=$(field "$tmp/full.out" forget_ppl_after)
    { less 0 "$fb" && less 0 "$fa"; } || bad "forget perplexity not reported: before '$fb', after '$fa'"
    steps=$(field "$tmp/full.out" steps) total=$(field "$tmp/full.out" total_steps)
    [ -n "$steps" ] && [ "$steps" = "$total" ] && [ "$steps" -gt 4 ] || bad "summary steps '$steps' of '$total'"
    # Every line of stdout is a record of a documented kind; one step record per step.
    num='-?[0-9][-+0-9.eE]*'
    step_re="^\\{\"step\":[0-9]+,\"steps\":$total,\"epoch\":[0-9]+,\"loss\":$num,\"tokens\":[1-9][0-9]*,\"targets\":[1-9][0-9]*,\"lr\":$num,\"micro_batches\":[1-9][0-9]*,\"next_micro_batches\":[1-9][0-9]*,\"small_targets\":[0-9]+,\"kappa\":$num,\"noise_scale\":($num|null),\"grad_sq\":($num|null),\"trace\":($num|null),\"grad_norm\":$num,\"tokens_per_s\":$num,\"seconds\":$num(,\"skipped\":true)?\\}$"
    eval_re="^\\{\"step\":[0-9]+,\"(eval|forget)_loss\":$num,\"(eval|forget)_ppl\":$num,\"(eval|forget)_targets\":[1-9][0-9]*\\}$"
    other_re='^\{"(memory|data|summary)":\{.*\}\}$'
    n_step=$(grep -cE "$step_re" "$tmp/full.out")
    [ "$n_step" = "$steps" ] || bad "$n_step well-formed step records for $steps steps"
    odd=$(grep -vE "$step_re" "$tmp/full.out" | grep -vE "$eval_re" | grep -vE "$other_re")
    [ -z "$odd" ] || bad "stdout lines of no documented kind: $odd"
    # Steps are numbered 1..steps in order.
    seq_ok=$(grep -E "$step_re" "$tmp/full.out" | sed 's/^{"step":\([0-9]*\),.*/\1/' | awk '$1 != NR { bad = 1 } END { print !bad }')
    [ "$seq_ok" = 1 ] || bad "step records are not numbered 1..$steps"
    [ "$(grep -c '"eval_loss"' "$tmp/full.out")" = 2 ] || bad "want 2 eval records (before, after)"
    [ "$(grep -c '"forget_loss"' "$tmp/full.out")" = 2 ] || bad "want 2 forget records (before, after)"
    grep -q '^memory: .*MiB' "$tmp/full.err" || bad "no memory statement on stderr: $(head -c 600 "$tmp/full.err")"
    grep -q '^data: 40 examples' "$tmp/full.err" || bad "no data summary on stderr: $(head -c 600 "$tmp/full.err")"
    grep -q '"data":{"examples":40,' "$tmp/full.out" || bad "no data record with 40 examples"
    [ -d "$tmp/full/checkpoint" ] || bad "no checkpoint directory after the run"
    [ -f "$tmp/full/model/config.json" ] && [ -f "$tmp/full/model/model.safetensors" ] ||
        bad "the default output of a HF model is not a HF directory: $(ls -R "$tmp/full")"
    run info_full info -m "$tmp/full/model"
    [ "$rc" -eq 0 ] || bad "batchcore info on the trained model: exit $rc: $(cat "$tmp/info_full.err")"
    [ "$(field "$tmp/full.out" model)" = "\"$tmp/full/model\"" ] || bad "summary model $(field "$tmp/full.out" model)"
fi

# --eval-every, --quiet, --format hf, other optimizers and schedules, accumulation.
run ev finetune "${common[@]}" --data "$tmp/train.jsonl" --eval-fraction 0.25 --out "$tmp/ev" \
    --optimizer lion --lr 1e-4 --schedule linear --eval-every 2 -q
[ "$rc" -eq 0 ] || bad "finetune --eval-every 2: exit $rc: $(cat "$tmp/ev.err")"
[ -s "$tmp/ev.err" ] && bad "--quiet wrote to stderr: $(head -c 400 "$tmp/ev.err")"
n_eval=$(grep -c '"eval_loss"' "$tmp/ev.out")
ev_steps=$(field "$tmp/ev.out" steps)
[ -n "$ev_steps" ] && [ "$n_eval" -eq $(((ev_steps - 1) / 2 + 2)) ] || bad "--eval-every 2: $n_eval eval records for '$ev_steps' steps"
grep -q '"data":{"examples":30,.*"eval_examples":10,' "$tmp/ev.out" || bad "--eval-fraction 0.25: $(grep '"data"' "$tmp/ev.out")"
run hf finetune "${common[@]}" --data "$tmp/train.jsonl" --out "$tmp/hf" --format hf --optimizer sgd --accumulation 2 \
    --schedule wsd -q
[ "$rc" -eq 0 ] || bad "finetune --format hf: exit $rc: $(cat "$tmp/hf.err")"
run info_hf info -m "$tmp/hf/model"
[ "$rc" -eq 0 ] || bad "batchcore info on the HF directory: exit $rc: $(cat "$tmp/info_hf.err")"
for f in gguf-f32 gguf-f16; do
    run gguf finetune "${common[@]}" --data "$tmp/train.jsonl" --out "$tmp/gguf" --format $f
    [ "$rc" -eq 2 ] && grep -q 'needs a GGUF model' "$tmp/gguf.err" || bad "--format $f of a HF model: exit $rc: $(cat "$tmp/gguf.err")"
    [ -s "$tmp/gguf.out" ] && bad "--format $f of a HF model: trained before refusing"
done

# ---------------------------------------------------------------- interrupt and resume
rargs=("${common[@]}" --data "$tmp/train.jsonl" --eval "$tmp/eval.jsonl" --epochs 12 --schedule cosine
    --warmup-steps 3 -q) # the checkpoint is only written at the stop (and the end)
run ref finetune "${rargs[@]}" --out "$tmp/ref"
[ "$rc" -eq 0 ] || bad "uninterrupted run: exit $rc: $(cat "$tmp/ref.err")"
env -i "$cli" finetune "${rargs[@]}" --out "$tmp/int" > "$tmp/int.out" 2> "$tmp/int.err" &
pid=$!
for ((i = 0; i < 600; i++)); do grep -q '^{"step":[0-9]*,"steps"' "$tmp/int.out" 2>/dev/null && break; sleep 0.02; done
kill -INT "$pid" 2>/dev/null
wait "$pid"
rc=$?
int_steps=$(field "$tmp/int.out" steps)
ref_steps=$(field "$tmp/ref.out" steps)
if [ "$rc" -ne 130 ]; then
    bad "SIGINT after the first step: exit $rc, want 130 (steps run: $int_steps of $ref_steps; a too fast run?): $(cat "$tmp/int.err")"
else
    [ "$(field "$tmp/int.out" stopped_by)" = '"SIGINT"' ] || bad "summary after SIGINT: stopped_by $(field "$tmp/int.out" stopped_by)"
    [ "$(field "$tmp/int.out" model)" = null ] || bad "an interrupted run wrote the model"
    [ -d "$tmp/int/checkpoint" ] || bad "no checkpoint after SIGINT"
    [ -n "$int_steps" ] && [ "$int_steps" -ge 1 ] && [ "$int_steps" -lt "$ref_steps" ] ||
        bad "interrupted run: $int_steps steps (want 1 .. $ref_steps - 1)"
    # Other options are refused.
    run mismatch finetune "${rargs[@]}" --lr 1e-2 --out "$tmp/int" --resume
    [ "$rc" -eq 1 ] && grep -q 'options differ' "$tmp/mismatch.err" || bad "--resume with another --lr: exit $rc: $(cat "$tmp/mismatch.err")"
    run resume finetune "${rargs[@]}" --out "$tmp/int" --resume
    [ "$rc" -eq 0 ] || bad "--resume: exit $rc: $(cat "$tmp/resume.err")"
    [ "$(field "$tmp/resume.out" steps)" = "$ref_steps" ] || bad "--resume ended at step $(field "$tmp/resume.out" steps), the uninterrupted run at $ref_steps"
    [ "$(field "$tmp/resume.out" resumed_from_step)" = "$int_steps" ] || bad "--resume: resumed_from_step $(field "$tmp/resume.out" resumed_from_step), want $int_steps"
    first=$(grep -m1 '^{"step":[0-9]*,"steps"' "$tmp/resume.out" | sed 's/^{"step":\([0-9]*\),.*/\1/')
    [ "$first" = $((int_steps + 1)) ] || bad "--resume: first step record $first, want $((int_steps + 1))"
    ra=$(field "$tmp/ref.out" eval_loss_after) rb=$(field "$tmp/resume.out" eval_loss_after)
    [ -n "$ra" ] && [ "$ra" = "$rb" ] || bad "--resume: final eval loss $rb, uninterrupted $ra (not bit-identical)"
    [ "$(field "$tmp/resume.out" eval_loss_before)" = "$(field "$tmp/ref.out" eval_loss_before)" ] ||
        bad "--resume: eval_loss_before not the original run's"
    cmp -s "$tmp/ref/model/model.safetensors" "$tmp/int/model/model.safetensors" || bad "--resume: the model differs from the uninterrupted run's"
fi
# SIGTERM: the same stop, exit 143.
env -i "$cli" finetune "${rargs[@]}" --out "$tmp/term" > "$tmp/term.out" 2> "$tmp/term.err" &
pid=$!
for ((i = 0; i < 600; i++)); do grep -q '^{"step":[0-9]*,"steps"' "$tmp/term.out" 2>/dev/null && break; sleep 0.02; done
kill -TERM "$pid" 2>/dev/null
wait "$pid"
rc=$?
[ "$rc" -eq 143 ] || bad "SIGTERM after the first step: exit $rc, want 143"
[ "$(field "$tmp/term.out" stopped_by)" = '"SIGTERM"' ] || bad "summary after SIGTERM: stopped_by $(field "$tmp/term.out" stopped_by)"
[ -d "$tmp/term/checkpoint" ] || bad "no checkpoint after SIGTERM"
run noresume finetune "${rargs[@]}" --out "$tmp/none" --resume
[ "$rc" -eq 1 ] || bad "--resume without a checkpoint: exit $rc, want 1"

# ---------------------------------------------------------------- LoRA
lspec="r=16,alpha=32,targets=q,k,v,o,gate,up,down"
run lora finetune "${common[@]}" --data "$tmp/train.jsonl" --eval "$tmp/eval.jsonl" --out "$tmp/lora" --epochs 4 \
    --lr 1e-2 --lora "$lspec"
if [ "$rc" -ne 0 ]; then
    bad "finetune --lora: exit $rc, want 0: $(cat "$tmp/lora.err")"
else
    before=$(field "$tmp/lora.out" eval_loss_before) after=$(field "$tmp/lora.out" eval_loss_after)
    less "$after" "$before" || bad "--lora: eval loss did not go down: before '$before', after '$after'"
    grep -q '^LoRA: rank 16, alpha 32 (scale 2), adapters on q_proj k_proj v_proj o_proj gate_proj up_proj down_proj' "$tmp/lora.err" ||
        bad "--lora: no LoRA statement on stderr: $(head -c 600 "$tmp/lora.err")"
    # The memory statement: what LoRA adds is less than what the full fine-tune adds.
    added() { grep '^{"memory":' "$1" | sed -n 's/.*"added":\([0-9]*\).*/\1/p'; }
    tc() { grep '^{"memory":' "$1" | sed -n 's/.*"trainable_copies":\([0-9]*\).*/\1/p'; }
    la=$(added "$tmp/lora.out") fa=$(added "$tmp/full.out") lt=$(tc "$tmp/lora.out") ft=$(tc "$tmp/full.out")
    [ -n "$la" ] && [ -n "$fa" ] && less "$la" "$fa" && less "$lt" "$ft" ||
        bad "--lora: memory added $la (trainable $lt), full fine-tune $fa (trainable $ft): want less"
    # bf16 compute (mixed precision): also learns; its memory statement adds the bf16
    # copies of the frozen base (4 bytes per weight) to trainable_copies. A CPU without
    # AVX-512 BF16 refuses it with exit 1 and says why.
    run lorabf finetune "${common[@]}" --data "$tmp/train.jsonl" --eval "$tmp/eval.jsonl" --out "$tmp/lorabf" --epochs 4 \
        --lr 1e-2 --lora "$lspec" --compute bf16
    if [ "$rc" -eq 1 ] && grep -q 'AVX-512 BF16' "$tmp/lorabf.err"; then
        echo "# --compute bf16: not supported on this CPU (checked the refusal)"
    elif [ "$rc" -ne 0 ]; then
        bad "finetune --lora --compute bf16: exit $rc, want 0: $(cat "$tmp/lorabf.err")"
    else
        bb=$(field "$tmp/lorabf.out" eval_loss_before) ba=$(field "$tmp/lorabf.out" eval_loss_after)
        less "$ba" "$bb" || bad "--compute bf16: eval loss did not go down: before '$bb', after '$ba'"
        bt=$(tc "$tmp/lorabf.out")
        [ -n "$bt" ] && less "$lt" "$bt" || bad "--compute bf16: trainable_copies $bt, want more than f32's $lt"
    fi
    run badcompute finetune "${common[@]}" --data "$tmp/train.jsonl" --out "$tmp/badc" --compute f16
    [ "$rc" -eq 2 ] || bad "--compute f16: exit $rc, want 2"
    cfg="$tmp/lora/adapter/adapter_config.json"
    [ -f "$cfg" ] && [ -s "$tmp/lora/adapter/adapter_model.safetensors" ] || bad "--lora: no PEFT adapter: $(ls -R "$tmp/lora")"
    if [ -f "$cfg" ]; then
        flat=$(tr -d ' \n\t' < "$cfg")
        grep -q '"r":16[,}]' <<< "$flat" || bad "--lora: adapter_config.json without r 16: $flat"
        grep -qE '"lora_alpha":32(\.0*)?[,}]' <<< "$flat" || bad "--lora: adapter_config.json without lora_alpha 32: $flat"
        grep -q '"peft_type":"LORA"' <<< "$flat" || bad "--lora: adapter_config.json: no peft_type LORA: $flat"
        for m in q_proj k_proj v_proj o_proj gate_proj up_proj down_proj; do
            grep -qE "\"target_modules\":\[[^]]*\"$m\"" <<< "$flat" || bad "--lora: target_modules without $m: $flat"
        done
    fi
    # Every target of every layer has its lora_A and lora_B.
    layers=$(tr -d ' \n' < "$model/config.json" | sed -n 's/.*"num_hidden_layers":\([0-9]*\).*/\1/p')
    n_ab=$(head -c 200000 "$tmp/lora/adapter/adapter_model.safetensors" | grep -aoE 'lora_[AB]\.weight' | wc -l)
    [ -n "$layers" ] && [ "$n_ab" -eq $((layers * 7 * 2)) ] || bad "--lora: $n_ab lora_A/lora_B tensors for $layers layers x 7 targets"
    [ -e "$tmp/lora/model" ] && bad "--lora wrote a model directory"
    [ "$(field "$tmp/lora.out" adapter)" = "\"$tmp/lora/adapter\"" ] || bad "--lora: summary adapter $(field "$tmp/lora.out" adapter)"
    [ "$(field "$tmp/lora.out" model)" = null ] || bad "--lora: summary model $(field "$tmp/lora.out" model), want null"
    [ -d "$tmp/lora/checkpoint" ] || bad "--lora: no checkpoint"
fi
# Interrupted and resumed: the same final step, eval loss and adapter as without the stop
# (with LoRA dropout: the masks of the resumed steps are the uninterrupted run's).
largs=("${rargs[@]}" --lr 1e-2 --lora "r=4,targets=q,v,down,rslora,seed=3,dropout=0.1")
run lref finetune "${largs[@]}" --out "$tmp/lref"
[ "$rc" -eq 0 ] || bad "uninterrupted --lora run: exit $rc: $(cat "$tmp/lref.err")"
env -i "$cli" finetune "${largs[@]}" --out "$tmp/lint" > "$tmp/lint.out" 2> "$tmp/lint.err" &
pid=$!
for ((i = 0; i < 600; i++)); do grep -q '^{"step":[0-9]*,"steps"' "$tmp/lint.out" 2>/dev/null && break; sleep 0.02; done
kill -INT "$pid" 2>/dev/null
wait "$pid"
rc=$?
lint_steps=$(field "$tmp/lint.out" steps) lref_steps=$(field "$tmp/lref.out" steps)
if [ "$rc" -ne 130 ]; then
    bad "--lora, SIGINT after the first step: exit $rc, want 130 ($lint_steps of $lref_steps steps): $(cat "$tmp/lint.err")"
else
    [ "$(field "$tmp/lint.out" adapter)" = null ] || bad "an interrupted --lora run wrote the adapter"
    for other in "r=4,targets=q,v,down,rslora,seed=4,dropout=0.1" "r=8,targets=q,v,down,rslora,seed=3,dropout=0.1" \
        "r=4,targets=q,v,down,seed=3,dropout=0.1" "r=4,targets=q,v,down,rslora,seed=3" "r=4,targets=q,v,down,rslora,seed=3,dropout=0.2"; do
        run lmis finetune "${rargs[@]}" --lr 1e-2 --lora "$other" --out "$tmp/lint" --resume
        [ "$rc" -eq 1 ] && grep -q 'options differ' "$tmp/lmis.err" || bad "--resume with --lora $other: exit $rc: $(cat "$tmp/lmis.err")"
    done
    run lmis finetune "${rargs[@]}" --lr 1e-2 --out "$tmp/lint" --resume
    [ "$rc" -eq 1 ] && grep -q 'options differ' "$tmp/lmis.err" || bad "--resume of a --lora run without --lora: exit $rc: $(cat "$tmp/lmis.err")"
    run lres finetune "${largs[@]}" --out "$tmp/lint" --resume
    [ "$rc" -eq 0 ] || bad "--lora --resume: exit $rc: $(cat "$tmp/lres.err")"
    [ -n "$lref_steps" ] && [ "$(field "$tmp/lres.out" steps)" = "$lref_steps" ] ||
        bad "--lora --resume ended at step $(field "$tmp/lres.out" steps), the uninterrupted run at $lref_steps"
    [ "$(field "$tmp/lres.out" resumed_from_step)" = "$lint_steps" ] || bad "--lora --resume: resumed_from_step $(field "$tmp/lres.out" resumed_from_step), want $lint_steps"
    ra=$(field "$tmp/lref.out" eval_loss_after) rb=$(field "$tmp/lres.out" eval_loss_after)
    [ -n "$ra" ] && [ "$ra" = "$rb" ] || bad "--lora --resume: final eval loss $rb, uninterrupted $ra (not bit-identical)"
    cmp -s "$tmp/lref/adapter/adapter_model.safetensors" "$tmp/lint/adapter/adapter_model.safetensors" ||
        bad "--lora --resume: the adapter differs from the uninterrupted run's"
fi
# A full fine-tune's checkpoint is not resumed as LoRA.
run lfull finetune "${rargs[@]}" --lr 1e-2 --lora "r=4" --out "$tmp/int" --resume
[ "$rc" -eq 1 ] && grep -q 'options differ' "$tmp/lfull.err" || bad "--lora --resume of a full fine-tune: exit $rc: $(cat "$tmp/lfull.err")"
# Bad specs: usage errors, before anything is loaded or created.
for spec in "r=0" "r=1025" "r=x" "r=4,frob=1" "r=4,targets=q,x" "r=4,targets=q,q" "r=4,targets=all,v" "r=4,r=8" \
    "alpha=32" "r=4,alpha=0" "r=4,alpha=-1" "r=4,alpha=nan" "r=4," "" "r=4,q" "r=4,seed=-1" "r=4,rslora,rslora" \
    "r=4,targets=" "r=4,,targets=q" "r=4,rslora=1" "r=4,targets=q,alpha=2,k" "r=4,dropout=1" "r=4,dropout=-0.1" \
    "r=4,dropout=nan" "r=4,dropout=" "r=4,dropout=0.1,dropout=0.2"; do
    run lbad finetune -m "$model" --data "$tmp/train.jsonl" --out "$tmp/lu" --lora "$spec"
    [ "$rc" -eq 2 ] || bad "--lora '$spec': exit $rc, want 2"
    grep -q -- '--lora' "$tmp/lbad.err" || bad "--lora '$spec': no message naming --lora: $(cat "$tmp/lbad.err")"
    [ -s "$tmp/lbad.out" ] && bad "--lora '$spec': wrote to stdout"
    [ -e "$tmp/lu" ] && { bad "--lora '$spec' created the output directory"; rm -rf "$tmp/lu"; }
done
run lfmt finetune -m "$model" --data "$tmp/train.jsonl" --out "$tmp/lu" --lora r=4 --format hf
[ "$rc" -eq 2 ] || bad "--lora with --format: exit $rc, want 2"
run ltwice finetune -m "$model" --data "$tmp/train.jsonl" --out "$tmp/lu" --lora r=4 --lora r=8
[ "$rc" -eq 2 ] || bad "--lora given twice: exit $rc, want 2"
run lnone finetune -m "$model" --data "$tmp/train.jsonl" --out "$tmp/lu" --lora
[ "$rc" -eq 2 ] || bad "--lora without a value: exit $rc, want 2"

# ---------------------------------------------------------------- bad data
cp "$tmp/train.jsonl" "$tmp/badline.jsonl"
sed -i '3s/.*/{"text": "the cat sat on/' "$tmp/badline.jsonl"
run baddata finetune "${common[@]}" --data "$tmp/badline.jsonl" --out "$tmp/bad" -q
[ "$rc" -eq 1 ] || bad "invalid JSON on line 3: exit $rc, want 1"
grep -qE 'line 3|badline.jsonl:3:' "$tmp/baddata.err" || bad "invalid JSON on line 3: the message does not name the line: $(cat "$tmp/baddata.err")"
run skip finetune "${common[@]}" --data "$tmp/badline.jsonl" --out "$tmp/skip" --skip-invalid -q
[ "$rc" -eq 0 ] || bad "--skip-invalid: exit $rc: $(cat "$tmp/skip.err")"
grep -q '"data":{"examples":39,.*"skipped":1,' "$tmp/skip.out" || bad "--skip-invalid: data record $(grep '"data"' "$tmp/skip.out")"

# ---------------------------------------------------------------- batch size control
run noise finetune "${common[@]}" --data "$tmp/train.jsonl" --out "$tmp/noise" --epochs 6 --accumulation 2 \
    --batch-control noise --max-micro-batches 8 --noise-warmup 1
if [ "$rc" -ne 0 ]; then
    bad "--batch-control noise: exit $rc: $(cat "$tmp/noise.err")"
else
    # step, micro_batches, next_micro_batches, kappa, lr, noise_scale of every step record.
    grep '^{"step":[0-9]*,"steps"' "$tmp/noise.out" |
        sed 's/.*"step":\([0-9]*\),.*"lr":\([^,]*\),"micro_batches":\([0-9]*\),"next_micro_batches":\([0-9]*\),.*"kappa":\([^,]*\),"noise_scale":\([^,]*\),.*/\1 \3 \4 \5 \2 \6/' \
        > "$tmp/noise.tab"
    [ -s "$tmp/noise.tab" ] || bad "--batch-control noise: no step records"
    why=$(awk 'BEGIN { prev = 2; grew = 0; finite = 0 }
        { if ($2 != prev) print "step " $1 ": " $2 " micro-batches, chosen " prev;
          if ($3 < $2 || $3 > 2 * $2 || $3 > 8 || $2 < 2) print "step " $1 ": next " $3 " after " $2;
          if ($4 != $2 / 2) print "step " $1 ": kappa " $4;
          want = 3e-3 * sqrt($2 / 2); if ($5 < want * (1 - 1e-9) || $5 > want * (1 + 1e-9)) print "step " $1 ": lr " $5 ", want " want;
          if ($6 != "null") finite++; if ($3 > $2) grew = 1; prev = $3 }
        END { if (!grew) print "the batch never grew"; if (finite < NR / 2) print finite " finite noise scales in " NR " steps" }' "$tmp/noise.tab")
    [ -z "$why" ] || bad "--batch-control noise: $why"
    grep -q 'batch [0-9]*x128  noise ' "$tmp/noise.err" || bad "--batch-control noise: no batch/noise on the progress line"
    grep -q '^batch: noise, 2\.\.8 micro-batches' "$tmp/noise.err" || bad "--batch-control noise: no batch statement"
fi
run fixed2 finetune "${common[@]}" --data "$tmp/train.jsonl" --out "$tmp/fixed2" --accumulation 2 -q
[ "$rc" -eq 0 ] || bad "--accumulation 2: exit $rc: $(cat "$tmp/fixed2.err")"
grep -q '"micro_batches":2,"next_micro_batches":2,"small_targets":[1-9][0-9]*,"kappa":1,"noise_scale":' "$tmp/fixed2.out" ||
    bad "--accumulation 2: step records without the noise estimate: $(grep -m1 '"step"' "$tmp/fixed2.out")"

# ---------------------------------------------------------------- gradient delay
run delay finetune "${common[@]}" --data "$tmp/train.jsonl" --out "$tmp/delay" --gradient-delay 2 --optimizer adabrake -q
[ "$rc" -eq 0 ] || bad "--gradient-delay 2: exit $rc: $(cat "$tmp/delay.err")"
dg=$(grep '^{"memory":' "$tmp/delay.out" | sed -n 's/.*"gradients":\([0-9]*\).*"delayed_gradients":\([0-9]*\).*/\1 \2/p')
# shellcheck disable=SC2086
set -- $dg
[ "${2:-x}" = "$((2 * ${1:-0}))" ] || bad "--gradient-delay 2: memory statement '$dg', want delayed_gradients = 2 x gradients"
na=$(grep '"applied":false' "$tmp/delay.out" | sed 's/^{"step":\([0-9]*\),.*/\1/' | tr '\n' ' ')
[ "$na" = "1 2 " ] || bad "--gradient-delay 2: \"applied\":false on steps '$na', want '1 2 '"

# ---------------------------------------------------------------- memory limit
run memlimit finetune "${common[@]}" --data "$tmp/train.jsonl" --out "$tmp/mem" --memory-limit 1K
[ "$rc" -eq 1 ] || bad "--memory-limit 1K: exit $rc, want 1"
grep -q '^memory: ' "$tmp/memlimit.err" || bad "--memory-limit 1K: no memory statement first"
grep -qi 'batchcore: create trainer: .*memory' "$tmp/memlimit.err" || bad "--memory-limit 1K: no library message: $(cat "$tmp/memlimit.err")"

# ---------------------------------------------------------------- usage errors
for args in "--optimizer nope" "--schedule nope" "--lr -1" "--format gguf-q4" "--eval-fraction 1" "--epochs 0" \
    "--frobnicate" "--chat-targets some" "--micro-batch-tokens 0" "--memory-limit 0" "--lr" \
    "--batch-control nope" "--min-micro-batches 2" "--batch-control noise --ramp-steps 4" \
    "--batch-control ramp --min-micro-batches 4 --max-micro-batches 2" "--batch-control noise --noise-ema 1" \
    "--batch-control noise --lr-scaling cubic" "--gradient-delay 65" "--gradient-delay -1"; do
    # shellcheck disable=SC2086
    run usage finetune -m "$model" --data "$tmp/train.jsonl" --out "$tmp/u" $args
    [ "$rc" -eq 2 ] || bad "finetune $args: exit $rc, want 2"
    [ -s "$tmp/usage.err" ] || bad "finetune $args: no message"
done
run nodata finetune -m "$model" --out "$tmp/u"
[ "$rc" -eq 2 ] && grep -q -- '--data' "$tmp/nodata.err" || bad "finetune without --data: exit $rc: $(cat "$tmp/nodata.err")"
run both finetune -m "$model" --data "$tmp/train.jsonl" --eval "$tmp/eval.jsonl" --eval-fraction 0.1 --out "$tmp/u"
[ "$rc" -eq 2 ] || bad "--eval with --eval-fraction: exit $rc, want 2"
[ -e "$tmp/u" ] && bad "a usage error created the output directory"

# ---------------------------------------------------------------- help
run help finetune --help
[ "$rc" -eq 0 ] || bad "finetune --help: exit $rc"
for opt in -m --model --data --out --eval --eval-fraction --forget-eval --optimizer --lr --weight-decay --schedule \
    --warmup-steps --min-lr --decay-steps --max-grad-norm --micro-batch-tokens --accumulation --epochs --seed \
    --recompute --compute bf16 --memory-limit --checkpoint-every --resume --format --max-tokens --truncate --skip-invalid \
    --chat-targets --eval-every --threads --quiet --batch-control --min-micro-batches --max-micro-batches \
    --ramp-steps --lr-scaling --noise-ema --noise-warmup --gradient-delay noise_scale micro_batches --lora rslora alpha= targets= seed= gate up down adapter_config.json adapter_model.safetensors adamw adam sgd lion lamb adagrad rmsprop adabrake constant cosine \
    linear wsd gguf-f32 gguf-f16 hf 130 143; do
    grep -qe "$opt\b" "$tmp/help.out" || bad "finetune --help does not mention $opt"
done
run top --help
grep -q 'finetune' "$tmp/top.out" || bad "batchcore --help does not list finetune"

exit $status
