#!/usr/bin/env python3
"""The LoRA training step of `ift bench train --lora-r R`, in PEFT + PyTorch on the CPU: a
transformers GPT2LMHeadModel of the preset's shapes (random weights, fp32, eager attention), PEFT
LoRA of rank R (alpha 2R) on c_attn, c_proj and c_fc, AdamW over the adapters, random tokens; the
median over timed steps after one warm-up step. Prints one JSON line: tokens_per_s, median_ms,
peak_rss_mb. Used by tools/bench/compare_peft.sh. Needs transformers and peft (the golden venv).

    /tmp/goldvenv/bin/python tools/bench/bench_peft.py --model gpt2-small-6l --batch 4 --seq-len 256 --lora-r 16
"""
import argparse
import json
import resource
import statistics
import time

import peft
import torch
import transformers

PRESETS = {
    "gpt2-124m": dict(vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024),
    "gpt2-small-6l": dict(vocab_size=50257, n_embd=384, n_layer=6, n_head=6, n_positions=1024),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gpt2-small-6l", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--lora-r", type=int, default=16)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(**PRESETS[a.model], activation_function="gelu_new", resid_pdrop=0.0,
                                  embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="eager")
    model = transformers.GPT2LMHeadModel(cfg)
    model = peft.get_peft_model(model, peft.LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, lora_dropout=0.0,
                                                       target_modules=["c_attn", "c_proj", "c_fc"],
                                                       fan_in_fan_out=True, task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (a.batch, a.seq_len))
    times = []
    for s in range(a.steps + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        loss.backward()
        opt.step()
        if s > 0:
            times.append(time.perf_counter() - t)
    median = statistics.median(times)
    print(json.dumps({"model": a.model, "batch": a.batch, "seq_len": a.seq_len, "lora_r": a.lora_r,
                      "median_ms": median * 1e3, "tokens_per_s": a.batch * a.seq_len / median,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                      "torch": torch.__version__, "peft": peft.__version__}))


if __name__ == "__main__":
    main()
