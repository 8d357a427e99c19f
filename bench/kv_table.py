#!/usr/bin/env python3
"""Renders bench/run.sh's kv results (kv_bench RESULT lines) as Markdown tables."""
import re
import sys

header, cap, ttft, ppl, info = [], {}, {}, [], {}
for line in open(sys.argv[1]):
    if line.startswith("# "):
        header.append(line[2:].strip())
        continue
    kv = dict(re.findall(r"(\w+)=(\S+)", line))
    if line.startswith("INFO "):
        info = kv
    if not line.startswith("RESULT "):
        continue
    if kv["part"] == "capacity":
        cap[kv["alloc"]] = kv
    elif kv["part"] == "ttft":
        ttft[int(kv["prefix_cache"])] = kv
    elif kv["part"] == "ppl":
        m = re.search(r"error=(.*)$", line.rstrip())
        if m:
            kv["error"] = m.group(1)  # a status string, may contain spaces
        ppl.append(kv)

for h in header:
    print(f"- {h}")
if info:
    print(f"- model: {info['n_layer']} layers, {info['n_head_kv']} KV heads x {int(info['n_embd']) // int(info['n_head'])} dims, "
          f"vocab {info['n_vocab']}; {info['threads']} threads")
print()

MB = 1 << 20
if cap:
    p, c = cap.get("paged"), cap.get("contiguous")
    print(f"### (a) Capacity: sequences that fit in a {p['budget_mb']} MiB KV budget (F32 KV)")
    print()
    print("| allocator | bytes / token | reserved per sequence | sequences fitting | tokens stored | waste |")
    print("|---|---:|---|---:|---:|---:|")
    if p:
        print(f"| paged (batchcore, block {p['block']}; measured until BC_E_KV_FULL) | {int(p['bytes_per_token']):,} | "
              f"ceil(len/16) blocks of {16 * int(p['bytes_per_token']) / 1024:.0f} KiB | **{p['seqs']}** | {int(p['tokens']):,} | "
              f"{float(p['waste_pct']):.1f}% |")
    if c:
        print(f"| contiguous, one n_ctx={c['n_ctx']} buffer per sequence (computed) | {int(c['bytes_per_token']):,} | "
              f"{int(c['bytes_per_seq']) / MB:.1f} MiB | **{c['seqs']}** | {int(c['tokens']):,} | {float(c['waste_pct']):.1f}% |")
    e = cap.get("exact")
    if e:
        print(f"| (reference: exact token bytes, no rounding) | {int(e['bytes_per_token']):,} | len x bytes/token | {e['seqs']} | "
              f"{int(e['tokens']):,} | 0% |")
    print()
    if p and c and int(c["seqs"]) > 0:
        ratio = int(p["seqs"]) / int(c["seqs"])
        print(f"Paged / contiguous = **{ratio:.1f}x** more sequences (target >= 3x: {'met' if ratio >= 3 else 'MISSED'}). "
              f"Length mix: prompt 50 + 1450·u^2.5, output 20 + 480·u^2.5 tokens (u uniform, seeded), mean "
              f"{float(p['mix_mean']):.0f} tokens (the {p['seqs']} sequences that fit: mean {float(p['mean_len']):.0f}); "
              f"sequences are admitted in sampled order until one does not fit. Paged waste = (allocated block bytes - "
              f"bytes of stored tokens) / allocated = ({int(p['bytes_used']):,} - {int(p['bytes_stored']):,}) / "
              f"{int(p['bytes_used']):,}. Fill time {float(p['secs']):.0f} s (tokens decoded through the model in chunks "
              f"of <= 512, logits for the last token only).")
    print()

if ttft:
    on, off = ttft.get(1), ttft.get(0)
    r = on or off
    print(f"### (b) Time to first token: {r['requests']} requests sharing a {r['system']}-token system prompt "
          f"(+ {r['suffix']} distinct tokens each), one after another")
    print()
    print("| prefix cache | mean TTFT | p50 | p99 | first request | total | prompt tokens served from cache |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for k, label in ((1, "ON (attach_prefix, then decode the rest)"), (0, "OFF (full prompt each time)")):
        x = ttft.get(k)
        if x:
            print(f"| {label} | {float(x['mean_ms']):.0f} ms | {float(x['p50_ms']):.0f} ms | {float(x['p99_ms']):.0f} ms | "
                  f"{float(x['first_ms']):.0f} ms | {float(x['total_s']):.2f} s | {int(x['cached_tokens']):,} |")
    print()
    if on and off:
        sp = float(off["mean_ms"]) / float(on["mean_ms"])
        print(f"Speedup (mean TTFT OFF / ON) = **{sp:.1f}x** (target >= 5x: {'met' if sp >= 5 else 'MISSED'}); "
              f"p50 {float(off['p50_ms']) / float(on['p50_ms']):.1f}x; total time "
              f"{float(off['total_s']) / float(on['total_s']):.1f}x. The ON mean includes request 0, which finds the "
              f"cache empty and prefills everything. p99 is nearest-rank over {r['requests']} requests (= the maximum). "
              f"Prompts are Pride and Prejudice tokens (system = the first {r['system']}, suffix i = the next "
              f"{r['suffix']} tokens after the previous suffix); TTFT = attach + decode of the uncached part up to its logits.")
    print()

if ppl:
    desc = {
        "f32": "F32 KV, all layers full attention",
        "f16": "F16 KV",
        "int8": "int8 KV, one float scale per token row",
        "kivi4": "KIVI 4-bit (kv_type 3)",
        "kivi2": "KIVI 2-bit (kv_type 4)",
        "swa256": "F32; layers 0 and {last} full, others sliding window {win}",
        "cla2": "F32; layer 2k+1 reads layer 2k's KV (cross-layer sharing), all full",
        "mix": "F32 MixAttention-style: layers 0 and {last} full with own KV, layer 1 reads layer 0, "
               "layers 2..{l2} window {win}, odd layer 2k+1 reads layer 2k",
    }
    base = next((x for x in ppl if x["config"] == "f32" and x["status"] == "ok"), None)
    n = base["tokens"] if base else "?"
    print(f"### (c) Quality: perplexity on {n} tokens of Pride and Prejudice (ch. 1-3), one sequence, chunks of 512, "
          f"teacher forcing")
    print()
    print("| config | layout | perplexity | delta vs f32 | KV bytes / token | KV bytes at the end of the text |")
    print("|---|---|---:|---:|---:|---:|")
    L = int(info.get("n_layer", 0) or 0)
    for x in ppl:
        d = desc.get(x["config"], x["config"]).format(last=L - 1, win=x.get("window", 256), l2=L - 2)
        if x["status"] != "ok":
            print(f"| {x['config']} | {d} | unsupported (bc_context_create: {x.get('error', '?')}) | | | |")
            continue
        p = float(x["ppl"])
        delta = f"{p - float(base['ppl']):+.4f} ({100 * (p / float(base['ppl']) - 1):+.2f}%)" if base else "n/a"
        bpt = int(x["bytes_per_token"])
        print(f"| {x['config']} | {d} | {p:.4f} | {delta} | {bpt:,} ({bpt / int(base['bytes_per_token']) * 100:.0f}%) | "
              f"{int(x['bytes_used']) / MB:.1f} MiB |")
    print()
    print("Perplexity = exp(mean NLL of token t+1 given the logits at t), log-softmax in double over all "
          f"{info.get('n_vocab', '?')} logits, every token of the text except the first scored; tokenized with "
          "bc_tokenize(add_special 0, parse_special 0). KV bytes / token from bc_context_kv_stats (what one more token "
          "costs before sliding windows release blocks); the last column is bytes_used after the whole text (windows "
          "released). The text is a famous public-domain novel the model has very likely seen in training, so absolute "
          "perplexities are low; the deltas between KV configs are what this measures. The sliding-window and sharing "
          "layouts are applied to the pretrained model without any fine-tuning (MixAttention trains models for them).")
