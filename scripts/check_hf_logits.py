"""Logits of small Hugging Face models against the same weights loaded into `nets`, both directions.

    python scripts/check_hf_logits.py [--out runs/check_hf_logits.json] [--tolerance 1e-4]

Needs torch and transformers (not dependencies of the project; install them beside it).
For each family (Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen3-MoE) the script builds a
tiny random model with transformers, moves every parameter off its initial value (norm
scales start at one and biases at zero, which would hide a mis-mapped norm or bias),
saves it with `save_pretrained` (safetensors), loads it with `nets.load_hf_checkpoint`
and compares float32 logits on the same tokens (max |difference|, and that over the
largest |logit|). Then the other direction: `nets.save_safetensors` of the loaded network
read back by transformers' `from_pretrained`. Prints a table, writes JSON, and exits 1
if any difference exceeds the tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers

import nets

_SHAPES = dict(vocab_size=96, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
               intermediate_size=80, max_position_embeddings=64, rms_norm_eps=1e-6, tie_word_embeddings=False)
_FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(rope_theta=500000.0)),
    "llama-tied-mha": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=4, tie_word_embeddings=True)),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=None, head_dim=16)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(rope_theta=1e6, use_sliding_window=False)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(head_dim=24, rope_theta=1e6)),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", dict(num_local_experts=4, num_experts_per_tok=2,
                                                            sliding_window=None)),
    "qwen3_moe": ("Qwen3MoeConfig", "Qwen3MoeForCausalLM", dict(num_experts=4, num_experts_per_tok=2,
                                                               moe_intermediate_size=32, mlp_only_layers=[0],
                                                               norm_topk_prob=True, head_dim=16)),
}


def _hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.float().numpy()


def _diff(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    err = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    return err, err / float(np.max(np.abs(a)))


def check_family(name: str, work: Path, seed: int) -> dict:
    config_cls, model_cls, extra = _FAMILIES[name]
    torch.manual_seed(seed)
    config = getattr(transformers, config_cls)(**{**_SHAPES, **extra}, attn_implementation="eager")
    hf_model = getattr(transformers, model_cls)(config).eval().float()
    with torch.no_grad():
        for param in hf_model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    tokens = np.random.default_rng(seed).integers(0, config.vocab_size, size=(2, 24)).astype(np.int64)
    hf_dir, our_dir = work / name / "hf", work / name / "ours"
    hf_model.save_pretrained(hf_dir, safe_serialization=True)
    ours = nets.load_hf_checkpoint(hf_dir)
    reference = _hf_logits(hf_model, tokens)
    ours_logits = np.asarray(ours(np.asarray(tokens, np.int32))[0], np.float32)
    load_abs, load_rel = _diff(reference, ours_logits)
    nets.save_safetensors(ours, our_dir)
    back = getattr(transformers, model_cls).from_pretrained(our_dir, attn_implementation="eager").eval().float()
    export_abs, export_rel = _diff(reference, _hf_logits(back, tokens))
    return {"family": name, "hf_class": model_cls, "params": sum(p.numel() for p in hf_model.parameters()),
            "tokens": list(tokens.shape), "load_max_abs_diff": load_abs, "load_rel_diff": load_rel,
            "export_max_abs_diff": export_abs, "export_rel_diff": export_rel,
            "max_abs_logit": float(np.max(np.abs(reference)))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/check_hf_logits.json"))
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |logit difference| allowed (float32)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [check_family(name, Path(tmp), args.seed) for name in _FAMILIES]
    head = f"{'family':<16}{'HF class':<22}{'params':>8}{'load max|d|':>13}{'export max|d|':>15}{'max|logit|':>12}"
    print(f"float32 logits, transformers {transformers.__version__}, torch {torch.__version__}, "
          f"tokens {rows[0]['tokens']}")
    print(head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r['family']:<16}{r['hf_class']:<22}{r['params']:>8}{r['load_max_abs_diff']:>13.2e}"
              f"{r['export_max_abs_diff']:>15.2e}{r['max_abs_logit']:>12.3f}")
    failed = [r["family"] for r in rows
              if max(r["load_max_abs_diff"], r["export_max_abs_diff"]) > args.tolerance]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__,
                                    "tolerance": args.tolerance, "rows": rows, "failed": failed}, indent=2) + "\n")
    print(f"wrote {args.out}; " + (f"FAILED: {', '.join(failed)}" if failed else f"all within {args.tolerance:g}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
