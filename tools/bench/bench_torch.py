#!/usr/bin/env python3
"""The training step of `ift bench train`, in PyTorch on the CPU: the same GPT-2 or Llama (the
demo's model) shapes, fp32, the same thread count, random tokens, forward + backward + AdamW, median
over timed steps after one warm-up step. Prints one JSON line: tokens_per_s, median_ms, peak_rss_mb.

Used by tools/bench/compare_torch.sh, which runs both programs in one invocation and prints the
ratio. Runs on Debian's python3-torch 1.13 and on PyTorch 2.x from PyPI. Attention is written out as
Hugging Face's eager GPT-2 and Llama compute it on both (1.13 has no fused attention), so both
versions run the same graph.

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
    # ift's llama-demo preset (tools/presets.cpp), the model of configs/demo.yaml: tied embeddings
    "llama-demo": dict(vocab=1024, n_embd=128, n_layer=4, n_head=4, intermediate=352, rope_theta=10000.0,
                       n_positions=1024, llama=True),
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


class RMSNorm(nn.Module):
    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(c))

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class LlamaBlock(nn.Module):
    def __init__(self, c, n_head, intermediate):
        super().__init__()
        self.n_head = n_head
        self.input_layernorm = RMSNorm(c)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(c, c, bias=False) for _ in range(4))
        self.post_attention_layernorm = RMSNorm(c)
        self.gate_proj = nn.Linear(c, intermediate, bias=False)
        self.up_proj = nn.Linear(c, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, c, bias=False)

    def forward(self, x, mask, cos, sin):
        B, T, C = x.shape
        h = self.input_layernorm(x)
        q, k, v = (p(h).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.n_head)
        att = att.masked_fill(mask[:T, :T], float("-inf")).softmax(dim=-1)
        x = x + self.o_proj((att @ v).transpose(1, 2).reshape(B, T, C))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, vocab, n_embd, n_layer, n_head, intermediate, rope_theta, n_positions, llama):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, n_embd)
        self.layers = nn.ModuleList(LlamaBlock(n_embd, n_head, intermediate) for _ in range(n_layer))
        self.norm = RMSNorm(n_embd)
        d = n_embd // n_head
        freq = 1.0 / rope_theta ** (torch.arange(0, d, 2).float() / d)
        ang = torch.outer(torch.arange(n_positions).float(), freq)
        ang = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", ang.cos())
        self.register_buffer("sin", ang.sin())
        self.register_buffer("mask", torch.ones(n_positions, n_positions, dtype=torch.bool).triu(1))

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.embed_tokens(idx)
        for layer in self.layers:
            x = layer(x, self.mask, self.cos[:T], self.sin[:T])
        logits = self.norm(x) @ self.embed_tokens.weight.t()  # tied head
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
    preset = PRESETS[a.model]
    model = Llama(**preset) if preset.get("llama") else GPT2(**preset)
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
