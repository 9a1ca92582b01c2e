#!/usr/bin/env python3
"""The training step of `ift bench train`, in PyTorch on the CPU: the same GPT-2 shapes, fp32, the
same thread count, random tokens, forward + backward + AdamW, median over timed steps after one
warm-up step. Prints one JSON line: tokens_per_s, median_ms, peak_rss_mb.

Used by tools/bench/compare_torch.sh, which runs both programs in one invocation and prints the
ratio. Needs Debian's python3-torch (1.13: no fused attention, so attention is written out as
Hugging Face's eager GPT-2 does it).

    python3 tools/bench/bench_torch.py --model gpt2-124m --batch 4 --seq-len 256 --steps 5 --threads 2
"""
import argparse
import json
import math
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    "gpt2-124m": dict(vocab=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024),
    "gpt2-small-6l": dict(vocab=50257, n_embd=384, n_layer=6, n_head=6, n_positions=1024),
}


class Block(nn.Module):
    def __init__(self, c, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(c, eps=1e-5)
        self.c_attn = nn.Linear(c, 3 * c)
        self.attn_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c, eps=1e-5)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def forward(self, x, mask):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.n_head)
        att = att.masked_fill(mask[:T, :T], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, vocab, n_embd, n_layer, n_head, n_positions):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(n_positions, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, eps=1e-5)
        self.register_buffer("mask", torch.ones(n_positions, n_positions, dtype=torch.bool).triu(1))

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for block in self.h:
            x = block(x, self.mask)
        logits = self.ln_f(x) @ self.wte.weight.t()  # tied head
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), ignore_index=-100)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gpt2-124m", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="0: torch's default (all cores)")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = GPT2(**PRESETS[a.model])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    idx = torch.randint(0, PRESETS[a.model]["vocab"], (a.batch, a.seq_len))
    targets = torch.roll(idx, -1, dims=1)
    targets[:, -1] = -100
    times = []
    for s in range(a.steps + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model(idx, targets).backward()
        opt.step()
        if s > 0:
            times.append(time.perf_counter() - t)
    median = statistics.median(times)
    print(json.dumps({"model": a.model, "batch": a.batch, "seq_len": a.seq_len, "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "median_ms": median * 1e3,
                      "tokens_per_s": a.batch * a.seq_len / median,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
