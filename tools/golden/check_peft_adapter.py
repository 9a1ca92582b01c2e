#!/usr/bin/env python3
"""Checks that an adapter ift wrote loads in PEFT and gives ift's logits.

    ift dump --model BASE --adapter ADAPTER --batch BATCH.json --out DUMP.safetensors
    /tmp/goldvenv/bin/python tools/golden/check_peft_adapter.py --base BASE --adapter ADAPTER \
        --batch BATCH.json --dump DUMP.safetensors

BASE is a Hugging Face model directory (an ift checkpoint is one), ADAPTER a LoRA checkpoint of an
ift run (adapter_config.json + adapter_model.safetensors). The script loads the base with
transformers, the adapter with peft.PeftModel.from_pretrained, runs the batch in float32 and
compares the logits with ift's dump: exit 0 when they agree within 1e-4 of the largest |logit|.
Tests never run it (they need no Python); docs/benchmarks.md records its result.
"""

import argparse
import json
import sys

import peft
import safetensors.torch
import torch
import transformers


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--batch", required=True)
    ap.add_argument("--dump", required=True)
    ap.add_argument("--rtol", type=float, default=1e-4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    base = transformers.AutoModelForCausalLM.from_pretrained(args.base, torch_dtype=torch.float32,
                                                             attn_implementation="eager").eval()
    model = peft.PeftModel.from_pretrained(base, args.adapter).eval()
    n_lora = sum(1 for n, _ in model.named_parameters() if "lora_" in n)
    with open(args.batch) as f:
        batch = json.load(f)
    ids = torch.tensor(batch["input_ids"])
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits
    ours = safetensors.torch.load_file(args.dump)["logits"]
    if ours.shape != logits.shape:
        sys.exit(f"logits shape {list(ours.shape)} (ift) vs {list(logits.shape)} (PEFT)")
    scale = logits.abs().max().item()
    err = (ours - logits).abs().max().item()
    # The adapter must matter, or the check proves nothing: compare with the bare base.
    with model.disable_adapter(), torch.no_grad():
        bare = model(input_ids=ids, use_cache=False).logits
    effect = (bare - logits).abs().max().item()
    print(f"peft {peft.__version__}, transformers {transformers.__version__}: {n_lora} LoRA tensors loaded; "
          f"max |ift - PEFT| = {err:.3e} (largest |logit| {scale:.3f}, rtol {args.rtol}); "
          f"the adapter moves the logits by up to {effect:.3e}")
    if err > args.rtol * scale:
        sys.exit("FAIL: ift's logits differ from PEFT's")
    if effect <= 10 * err:
        sys.exit("FAIL: the adapter barely changes the logits; train it longer for a meaningful check")
    print("OK")


if __name__ == "__main__":
    main()
