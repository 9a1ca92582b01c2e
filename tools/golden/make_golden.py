#!/usr/bin/env python3
"""Golden files for ift's model tests: tiny random-weight Hugging Face models and what they compute.

Run by hand (never by CI or the tests, which only read the committed files):

    /usr/bin/python3 -m venv --system-site-packages /tmp/goldvenv   # sees Debian's python3-torch
    /tmp/goldvenv/bin/pip install "transformers==4.44.2" safetensors
    /tmp/goldvenv/bin/python tools/golden/make_golden.py            # writes tests/fixtures/golden/

Every case builds a model from a config object (nothing is downloaded), gives it random weights from
a fixed seed, runs one batch in float32 with the eager attention implementation, calls backward on
Hugging Face's own loss and stores:

    <case>/config.json, model.safetensors   as save_pretrained writes them
    <case>/batch.json                       input_ids, labels (HF convention), [position_ids, seq_lens]
    <case>/expected.safetensors             loss (shape []), logits [B,T,V], grad.<name> per parameter

Packed cases hold several samples per row. They are computed twice, once per sample and once packed
(Llama: one forward with restarting position ids and a 4D block-diagonal causal mask), and the script
fails unless both agree. See tests/fixtures/golden/README.md for the conventions.
"""

import argparse
import json
import os
import shutil
import sys

import safetensors
import safetensors.torch
import torch
import transformers
from transformers import (GemmaConfig, GemmaForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, MistralConfig, MistralForCausalLM, Phi3Config, Phi3ForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

IGNORE = -100  # HF's ignore_index for labels


def gpt2_config(vocab, n_positions):
    # head_dim 9: odd and not a power of two, to catch kernels that assume otherwise.
    return GPT2Config(vocab_size=vocab, n_positions=n_positions, n_embd=36, n_layer=2, n_head=4,
                      activation_function="gelu_new", layer_norm_epsilon=1e-5, resid_pdrop=0.0,
                      embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
                      attn_implementation="eager")


def llama_gqa_config():
    # 4 query heads share 2 kv heads; rope_theta is not the default so theta handling is exercised;
    # intermediate 56 is not a multiple of hidden.
    return LlamaConfig(vocab_size=67, hidden_size=32, intermediate_size=56, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                       rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
                       attention_bias=False, mlp_bias=False, attention_dropout=0.0,
                       attn_implementation="eager")


def llama_tied_config():
    return LlamaConfig(vocab_size=53, hidden_size=24, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=3, num_key_value_heads=3, max_position_embeddings=32,
                       rms_norm_eps=1e-6, tie_word_embeddings=True, attention_bias=False,
                       mlp_bias=False, attention_dropout=0.0, attn_implementation="eager")


def qwen2_config(tied):
    # Qwen2: q/k/v biases and no o_proj bias (there is no attention_bias field), GQA 4/2.
    return Qwen2Config(vocab_size=59, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                       rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=tied,
                       use_sliding_window=False, attention_dropout=0.0, attn_implementation="eager")


def mistral_config():
    # Mistral keeps its default sliding window (4096), far longer than the batch: ift accepts it
    # and refuses longer sequences.
    return MistralConfig(vocab_size=61, hidden_size=32, intermediate_size=56, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         rms_norm_eps=1e-5, tie_word_embeddings=False, attention_dropout=0.0,
                         attn_implementation="eager")


def mistral_wide_head_config(head_dim, heads, kv_heads):
    # Head dims 64 and 128 are where bf16 attention runs ift's tensor-core kernels (and where the
    # cuDNN path applies); Mistral's config takes a head_dim apart from hidden_size / heads, so the
    # model stays small (hidden 32) while each head is wide.
    return MistralConfig(vocab_size=61, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                         max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                         tie_word_embeddings=False, attention_dropout=0.0, attn_implementation="eager")


def phi3_config():
    # Phi-3: fused qkv_proj and gate_up_proj; pad_token_id None so no embedding row is a
    # padding_idx (whose gradient torch would zero).
    return Phi3Config(vocab_size=57, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                      original_max_position_embeddings=32, rms_norm_eps=1e-5, rope_theta=10000.0,
                      tie_word_embeddings=False, pad_token_id=None, bos_token_id=1, eos_token_id=2,
                      resid_pdrop=0.0, embd_pdrop=0.0, attention_dropout=0.0, rope_scaling=None,
                      sliding_window=None, attn_implementation="eager")


def gemma_config():
    # Gemma (1): GeGLU with the tanh GELU, RMSNorm x * (1 + w), embeddings times sqrt(hidden), tied.
    # Multi-query attention (2 heads, 1 kv head) of head_dim 256, Gemma's, so q_dim (512) is not
    # the hidden size (32). pad_token_id None so no embedding row is a padding_idx.
    return GemmaConfig(vocab_size=63, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=256, max_position_embeddings=32,
                       rms_norm_eps=1e-6, rope_theta=10000.0, hidden_activation="gelu_pytorch_tanh",
                       tie_word_embeddings=True, pad_token_id=None, bos_token_id=2, eos_token_id=1,
                       attention_bias=False, attention_dropout=0.0, attn_implementation="eager")


def randomize(model, seed):
    """Weights large enough that logits and gradients are far from flat.

    The default init (std 0.02, norms at 1) gives near-uniform logits, where many bugs hide; norm
    weights get noise around 1 so a missing or transposed norm weight shows.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            leaf = name.split(".")[-2] if name.count(".") else name
            if name.endswith("bias"):
                p.copy_(0.05 * noise)
            elif "ln" in leaf or "norm" in leaf:
                p.copy_(1.0 + 0.1 * noise)
            elif leaf in ("wte", "wpe", "embed_tokens", "lm_head"):
                p.copy_(0.2 * noise)
            else:
                p.copy_(0.1 * noise)


def random_tokens(seed, batch, length, vocab):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=gen)


def masked_ce_sum(logits, labels):
    """Sum of cross-entropy over shifted, non-ignored targets, and their count (HF's shift)."""
    shift_logits = logits[..., :-1, :].reshape(-1, logits.shape[-1])
    shift_labels = labels[..., 1:].reshape(-1)
    total = torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE,
                                              reduction="sum")
    return total, int((shift_labels != IGNORE).sum())


def block_causal_mask(seq_lens, length, dtype=torch.float32):
    """Additive [B, 1, T, T] mask: 0 where query i may attend key j (same sample, j <= i), else min."""
    neg = torch.finfo(dtype).min
    mask = torch.full((len(seq_lens), 1, length, length), neg, dtype=dtype)
    for b, lens in enumerate(seq_lens):
        start = 0
        for n in lens:
            mask[b, 0, start:start + n, start:start + n] = torch.triu(
                torch.full((n, n), neg, dtype=dtype), diagonal=1)
            start += n
        assert start == length, f"row {b}: sample lengths {lens} do not fill {length} tokens"
    return mask


def packed_batch(seed, seq_lens, length, vocab, prompt_lens):
    """Rows of packed samples: restarting positions, first label of each sample ignored, and the
    first prompt_lens[b][s] labels of sample s ignored as prompt tokens."""
    ids = random_tokens(seed, len(seq_lens), length, vocab)
    labels = ids.clone()
    pos = torch.zeros_like(ids)
    for b, lens in enumerate(seq_lens):
        start = 0
        for s, n in enumerate(lens):
            pos[b, start:start + n] = torch.arange(n)
            # The first token of a sample is never a target: otherwise the previous sample's last
            # token would be trained to predict it.
            labels[b, start] = IGNORE
            labels[b, start:start + prompt_lens[b][s]] = IGNORE
            start += n
    return ids, labels, pos


def grads_of(model):
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def run_plain(model, ids, labels):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=labels, use_cache=False)
    out.loss.backward()
    return out.loss.detach(), out.logits.detach(), grads_of(model)


def run_per_sample(model, ids, labels, seq_lens):
    """The packed batch computed one sample at a time: the ground truth a packed run must match."""
    model.zero_grad(set_to_none=True)
    logits = torch.zeros(ids.shape + (model.config.vocab_size,))
    total, count = 0.0, 0
    pieces = []
    for b, lens in enumerate(seq_lens):
        start = 0
        for n in lens:
            out = model(input_ids=ids[b:b + 1, start:start + n], use_cache=False)
            s, c = masked_ce_sum(out.logits, labels[b:b + 1, start:start + n])
            total, count = total + s, count + c
            pieces.append((b, start, n, out.logits))
            start += n
    loss = total / count
    loss.backward()
    for b, start, n, lg in pieces:
        logits[b, start:start + n] = lg[0].detach()
    return loss.detach(), logits, grads_of(model)


def run_packed_4d(model, ids, labels, pos, seq_lens):
    model.zero_grad(set_to_none=True)
    mask = block_causal_mask(seq_lens, ids.shape[1])
    out = model(input_ids=ids, labels=labels, position_ids=pos, attention_mask=mask, use_cache=False)
    out.loss.backward()
    return out.loss.detach(), out.logits.detach(), grads_of(model)


def assert_same(what, a, b, atol=2e-6, rtol=1e-4):
    la, lb = a[0], b[0]
    if not torch.allclose(la, lb, atol=atol, rtol=rtol):
        sys.exit(f"{what}: loss differs: {la.item()} vs {lb.item()}")
    if not torch.allclose(a[1], b[1], atol=atol * 10, rtol=rtol):
        sys.exit(f"{what}: logits differ by {(a[1] - b[1]).abs().max().item()}")
    for name in a[2]:
        ga, gb = a[2][name], b[2][name]
        if not torch.allclose(ga, gb, atol=atol, rtol=rtol * 10):
            sys.exit(f"{what}: grad of {name} differs by {(ga - gb).abs().max().item()}")
    print(f"  {what}: packed and per-sample agree (max logit diff {(a[1] - b[1]).abs().max().item():.2e})")


SELECTED = None


def save_keeping(model, d, keep):
    """save_pretrained into d, keeping only the files `keep` (the weights file last); returns the
    tensor names the weights file holds."""
    model.save_pretrained(d, safe_serialization=True)
    for extra in os.listdir(d):
        if extra not in keep:
            os.remove(os.path.join(d, extra))
    with safetensors.safe_open(os.path.join(d, keep[-1]), "pt") as f:
        return set(f.keys())


def save_case(out_dir, case, model, batch, result, tied_names):
    if SELECTED is not None and case not in SELECTED:
        return
    loss, logits, grads = result
    d = os.path.join(out_dir, case)
    if os.path.isdir(d):
        shutil.rmtree(d)
    # Only config.json and model.safetensors are part of the fixture.
    saved = save_keeping(model, d, ("config.json", "model.safetensors"))
    if saved != set(grads):
        sys.exit(f"{case}: saved names {sorted(saved ^ set(grads))} differ from named_parameters()")
    for name in tied_names:
        if name in saved:
            sys.exit(f"{case}: tied weight {name} was saved")

    with open(os.path.join(d, "batch.json"), "w") as f:
        # One row per line: readable in a diff and still small.
        f.write("{\n")
        keys = list(batch)
        for i, k in enumerate(keys):
            rows = ",\n    ".join(json.dumps(r) for r in batch[k])
            f.write(f'  "{k}": [\n    {rows}\n  ]' + (",\n" if i + 1 < len(keys) else "\n"))
        f.write("}\n")

    tensors = {"loss": loss.reshape([]).contiguous(), "logits": logits.contiguous()}
    for name, g in grads.items():
        tensors["grad." + name] = g.contiguous()
    # One key: safetensors writes metadata in hash-map order, so several keys would make the file
    # differ from run to run although the tensors are identical.
    metadata = {"generator": f"tools/golden/make_golden.py case={case} torch={torch.__version__} "
                             f"transformers={transformers.__version__} safetensors={safetensors.__version__}"}
    safetensors.torch.save_file(tensors, os.path.join(d, "expected.safetensors"), metadata=metadata)
    for f in os.listdir(d):  # the safetensors library creates files readable by the owner only
        os.chmod(os.path.join(d, f), 0o644)
    print(f"  {case}: loss {loss.item():.6f}, logits {list(logits.shape)} (std {logits.std().item():.3f}), "
          f"{len(grads)} parameters, {sum(g.numel() for g in grads.values())} values")


def to_lists(t):
    return [[int(x) for x in row] for row in t]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.normpath(os.path.join(here, "..", "..", "tests", "fixtures", "golden"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=default_out, help=f"output directory (default {default_out})")
    ap.add_argument("--cases", nargs="*", help="write only these cases (default: all)")
    args = ap.parse_args()
    global SELECTED
    SELECTED = set(args.cases) if args.cases else None
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)  # reproducible reductions
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"safetensors {safetensors.__version__} -> {args.out}")

    # gpt2: plain rows, T = 7; the second row's first three labels ignored (prompt tokens).
    cfg = gpt2_config(vocab=61, n_positions=16)
    model = GPT2LMHeadModel(cfg).eval()
    randomize(model, seed=1)
    ids = random_tokens(101, 2, 7, cfg.vocab_size)
    labels = ids.clone()
    labels[1, :3] = IGNORE
    save_case(args.out, "gpt2", model, {"input_ids": to_lists(ids), "labels": to_lists(labels)},
              run_plain(model, ids, labels), tied_names=["lm_head.weight"])

    # llama_gqa: 4 query heads, 2 kv heads, untied lm_head, rope_theta 500000, T = 11.
    cfg = llama_gqa_config()
    model = LlamaForCausalLM(cfg).eval()
    randomize(model, seed=2)
    ids = random_tokens(102, 2, 11, cfg.vocab_size)
    labels = ids.clone()
    labels[1, :4] = IGNORE
    save_case(args.out, "llama_gqa", model, {"input_ids": to_lists(ids), "labels": to_lists(labels)},
              run_plain(model, ids, labels), tied_names=[])

    # llama_tied: tied embeddings, no GQA, default theta, T = 7.
    cfg = llama_tied_config()
    model = LlamaForCausalLM(cfg).eval()
    randomize(model, seed=3)
    ids = random_tokens(103, 2, 7, cfg.vocab_size)
    labels = ids.clone()
    labels[0, :2] = IGNORE
    save_case(args.out, "llama_tied", model, {"input_ids": to_lists(ids), "labels": to_lists(labels)},
              run_plain(model, ids, labels), tied_names=["lm_head.weight"])

    # llama_packed: the llama_gqa architecture, rows [4, 1, 6] and [11].
    seq_lens = [[4, 1, 6], [11]]
    prompt_lens = [[2, 0, 3], [5]]
    cfg = llama_gqa_config()
    model = LlamaForCausalLM(cfg).eval()
    randomize(model, seed=4)
    ids, labels, pos = packed_batch(104, seq_lens, 11, cfg.vocab_size, prompt_lens)
    packed = run_packed_4d(model, ids, labels, pos, seq_lens)
    assert_same("llama_packed", packed, run_per_sample(model, ids, labels, seq_lens))
    save_case(args.out, "llama_packed", model,
              {"input_ids": to_lists(ids), "labels": to_lists(labels), "position_ids": to_lists(pos),
               "seq_lens": seq_lens}, packed, tied_names=[])

    # gpt2_packed: rows [3, 5, 3] and [2, 9]. GPT-2 in transformers 4.44 flattens attention_mask to
    # [B, T], so it cannot take a 4D mask: the per-sample computation is the result. It is checked
    # against plain (unpacked) runs of the same samples one by one.
    seq_lens = [[3, 5, 3], [2, 9]]
    prompt_lens = [[1, 2, 0], [1, 4]]
    cfg = gpt2_config(vocab=61, n_positions=16)
    model = GPT2LMHeadModel(cfg).eval()
    randomize(model, seed=5)
    ids, labels, pos = packed_batch(105, seq_lens, 11, cfg.vocab_size, prompt_lens)
    per_sample = run_per_sample(model, ids, labels, seq_lens)
    # Sanity check of batch.json's position_ids: fed explicitly, sample by sample, they reproduce
    # the per-sample logits (so they are the positions GPT-2 used).
    with torch.no_grad():
        for b, lens in enumerate(seq_lens):
            start = 0
            for n in lens:
                lg = model(input_ids=ids[b:b + 1, start:start + n],
                           position_ids=pos[b:b + 1, start:start + n]).logits[0]
                if not torch.allclose(lg, per_sample[1][b, start:start + n], atol=1e-6):
                    sys.exit("gpt2_packed: position ids do not restart as intended")
                start += n
    save_case(args.out, "gpt2_packed", model,
              {"input_ids": to_lists(ids), "labels": to_lists(labels), "position_ids": to_lists(pos),
               "seq_lens": seq_lens}, per_sample, tied_names=["lm_head.weight"])

    def plain_case(case, model_class, cfg, seed, T, ignored, tied):
        """A plain batch of 2 rows of T tokens; `ignored` = (row, count) prompt labels ignored."""
        model = model_class(cfg).eval()
        randomize(model, seed=seed)
        ids = random_tokens(100 + seed, 2, T, cfg.vocab_size)
        labels = ids.clone()
        labels[ignored[0], :ignored[1]] = IGNORE
        save_case(args.out, case, model, {"input_ids": to_lists(ids), "labels": to_lists(labels)},
                  run_plain(model, ids, labels), tied_names=["lm_head.weight"] if tied else [])

    # qwen2 (untied) and qwen2_tied: q/k/v biases, no o_proj bias.
    plain_case("qwen2", Qwen2ForCausalLM, qwen2_config(False), seed=6, T=9, ignored=(1, 3), tied=False)
    plain_case("qwen2_tied", Qwen2ForCausalLM, qwen2_config(True), seed=7, T=7, ignored=(1, 3), tied=True)
    # mistral: GQA 4/2, untied, a sliding window longer than the batch.
    plain_case("mistral", MistralForCausalLM, mistral_config(), seed=8, T=10, ignored=(0, 2), tied=False)
    # phi3: fused qkv_proj and gate_up_proj tensors, GQA 4/2.
    plain_case("phi3", Phi3ForCausalLM, phi3_config(), seed=9, T=8, ignored=(1, 2), tied=False)
    # mistral_hd64 (GQA 4/2) and mistral_hd128 (GQA 2/1): heads of 64 and 128 on hidden 32, T = 11
    # and 13, so attention tiles of 64 rows are partly filled.
    plain_case("mistral_hd64", MistralForCausalLM, mistral_wide_head_config(64, 4, 2), seed=11, T=11,
               ignored=(1, 3), tied=False)
    plain_case("mistral_hd128", MistralForCausalLM, mistral_wide_head_config(128, 2, 1), seed=12, T=13,
               ignored=(0, 4), tied=False)
    # gemma: GeGLU, x * (1 + w) norms, scaled embeddings, MQA with head_dim 256, tied.
    plain_case("gemma", GemmaForCausalLM, gemma_config(), seed=10, T=9, ignored=(0, 3), tied=True)

if __name__ == "__main__":
    main()
