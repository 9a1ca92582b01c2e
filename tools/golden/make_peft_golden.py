#!/usr/bin/env python3
"""Golden files for ift's LoRA: tiny random Hugging Face models wrapped by PEFT, and what they compute.

Run by hand (never by CI or the tests, which only read the committed files):

    /tmp/goldvenv/bin/python tools/golden/make_peft_golden.py     # transformers 4.44.2, peft 0.12.0

Each case is a base model (make_golden.py's configs and random weights), a PEFT LoRA adapter on it
with random A and *non-zero* B (so the adapter changes the logits and every gradient path carries
signal), one batch run in float32 with backward on Hugging Face's loss, and:

    <case>/config.json, model.safetensors     the base, as save_pretrained writes it
    <case>/adapter/adapter_config.json,       the adapter, as PeftModel.save_pretrained writes it
           adapter_model.safetensors
    <case>/batch.json                         input_ids, labels (HF convention)
    <case>/expected.safetensors               loss, logits, grad.<PEFT name> of every adapter tensor
    <case>/merged.safetensors                 merge_and_unload()'s weights (save_pretrained's names)

It also checks, before writing, that the saved adapter loads back with PeftModel.from_pretrained and
gives the same logits.
"""

import argparse
import json
import os
import shutil
import sys

import peft
import safetensors
import safetensors.torch
import torch
import transformers
from transformers import GPT2LMHeadModel, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden as mg  # noqa: E402  (the base configs, random weights and batches)


def randomize_adapters(model, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
            elif "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def saved_name(name):
    """named_parameters() name of an adapter tensor -> its key in adapter_model.safetensors."""
    return name.replace(".default.", ".")


def write_json_rows(path, batch):
    with open(path, "w") as f:
        f.write("{\n")
        keys = list(batch)
        for i, k in enumerate(keys):
            rows = ",\n    ".join(json.dumps(r) for r in batch[k])
            f.write(f'  "{k}": [\n    {rows}\n  ]' + (",\n" if i + 1 < len(keys) else "\n"))
        f.write("}\n")


def make_case(out, case, model_class, cfg, seed, T, ignored, lora_kwargs):
    d = os.path.join(out, case)
    if os.path.isdir(d):
        shutil.rmtree(d)
    base = model_class(cfg).eval()
    mg.randomize(base, seed=seed)
    base.save_pretrained(d, safe_serialization=True)
    for extra in os.listdir(d):
        if extra not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(d, extra))

    model = peft.get_peft_model(base, peft.LoraConfig(task_type="CAUSAL_LM", bias="none", lora_dropout=0.0,
                                                      **lora_kwargs))
    randomize_adapters(model, seed + 1000)
    model.eval()
    ids = mg.random_tokens(200 + seed, 2, T, cfg.vocab_size)
    labels = ids.clone()
    labels[ignored[0], :ignored[1]] = mg.IGNORE
    model.zero_grad(set_to_none=True)
    out_ = model(input_ids=ids, labels=labels, use_cache=False)
    out_.loss.backward()
    loss, logits = out_.loss.detach(), out_.logits.detach()
    grads = {saved_name(n): p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, f"{case}: frozen {n} got a gradient"

    adapter_dir = os.path.join(d, "adapter")
    saved = mg.save_keeping(model, adapter_dir, ("adapter_config.json", "adapter_model.safetensors"))
    if saved != set(grads):
        sys.exit(f"{case}: adapter file names {sorted(saved ^ set(grads))} differ from the trainable parameters")

    # The adapter as written loads back in PEFT and gives the same logits.
    fresh = model_class.from_pretrained(d).eval()
    reloaded = peft.PeftModel.from_pretrained(fresh, adapter_dir).eval()
    with torch.no_grad():
        again = reloaded(input_ids=ids, use_cache=False).logits
    if not torch.allclose(again, logits, atol=1e-5, rtol=1e-5):  # logits of size ~10
        sys.exit(f"{case}: the reloaded adapter differs by {(again - logits).abs().max().item()}")

    merged = model.merge_and_unload()
    with torch.no_grad():
        merged_logits = merged(input_ids=ids, use_cache=False).logits
    if not torch.allclose(merged_logits, logits, atol=1e-4, rtol=1e-4):
        sys.exit(f"{case}: merged logits differ by {(merged_logits - logits).abs().max().item()}")
    mdir = os.path.join(d, ".merged")
    merged.save_pretrained(mdir, safe_serialization=True)
    os.replace(os.path.join(mdir, "model.safetensors"), os.path.join(d, "merged.safetensors"))
    shutil.rmtree(mdir)

    write_json_rows(os.path.join(d, "batch.json"),
                    {"input_ids": mg.to_lists(ids), "labels": mg.to_lists(labels)})
    tensors = {"loss": loss.reshape([]).contiguous(), "logits": logits.contiguous()}
    for name, g in grads.items():
        tensors["grad." + name] = g.contiguous()
    metadata = {"generator": f"tools/golden/make_peft_golden.py case={case} torch={torch.__version__} "
                             f"transformers={transformers.__version__} peft={peft.__version__} "
                             f"safetensors={safetensors.__version__}"}
    safetensors.torch.save_file(tensors, os.path.join(d, "expected.safetensors"), metadata=metadata)
    for root, _, files in os.walk(d):
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    print(f"  {case}: loss {loss.item():.6f}, logits {list(logits.shape)}, {len(grads)} adapter tensors, "
          f"{sum(g.numel() for g in grads.values())} values")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.normpath(os.path.join(here, "..", "..", "tests", "fixtures", "golden"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=default_out)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__} "
          f"-> {args.out}")
    # GPT-2: PEFT adapts the whole Conv1D c_attn (out 3 C); "c_proj" matches attn.c_proj and mlp.c_proj.
    make_case(args.out, "lora_gpt2", GPT2LMHeadModel, mg.gpt2_config(vocab=61, n_positions=16), seed=11, T=7,
              ignored=(1, 3), lora_kwargs=dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"],
                                                fan_in_fan_out=True))
    # Llama GQA, every projection: q/k/v are slices of ift's fused qkv, gate/up of its gate_up.
    make_case(args.out, "lora_llama", LlamaForCausalLM, mg.llama_gqa_config(), seed=12, T=9, ignored=(0, 2),
              lora_kwargs=dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                 "gate_proj", "up_proj", "down_proj"]))
    # Llama, some slices alone and rsLoRA's alpha / sqrt(r).
    make_case(args.out, "lora_llama_rslora", LlamaForCausalLM, mg.llama_tied_config(), seed=13, T=7,
              ignored=(1, 2), lora_kwargs=dict(r=3, lora_alpha=6, use_rslora=True,
                                                target_modules=["k_proj", "up_proj", "o_proj"]))


if __name__ == "__main__":
    main()
