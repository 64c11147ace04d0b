"""Megatron-LM iteration times and NCCL all-reduce bus bandwidth predicted by `hwcost.parallel`.

    python scripts/parallel_cost.py predict    # writes results/parallel/megatron_predictions.json
    python scripts/parallel_cost.py compare    # + results/parallel/megatron_comparison.json and README.md
    python scripts/parallel_cost.py            # both

`predict` never reads a published time: every parameter is fixed here from datasheets, our
own single-GPU calibration, or a stated assumption (listed in the JSON). The predictions are
committed before `compare` reads the published times (results/parallel/megatron_published.json:
Korthikanti et al., MLSys'23, Table 5, as Calculon stores them; NCCL all-reduce bus bandwidth
on H100 hosts).
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import hwcost
import nets

OUT = Path(__file__).resolve().parents[1] / "results" / "parallel"
PREDICTIONS = OUT / "megatron_predictions.json"
PUBLISHED = OUT / "megatron_published.json"
COMPARISON = OUT / "megatron_comparison.json"
README = OUT / "README.md"

# Our own single-GPU fit (results/calibration/calibration_h200.json, "efficiency"): the large-op
# asymptotes fitted to H200 kernel times, applied to the A100 as fractions of its datasheet peaks
# (an assumption: the same fraction on another chip): bf16 GEMMs 0.742 of peak FLOP/s,
# elementwise kernels 0.567 of peak HBM bandwidth.
GEMM_EFFICIENCY = 0.742
ELEMENTWISE_EFFICIENCY = 0.567
ASSUMPTIONS = {
    "gpu": "hwcost a100-sxm preset (datasheet: 312 TFLOP/s FP16/BF16 dense, 2039 GB/s HBM2e)",
    "compute_efficiency": f"{GEMM_EFFICIENCY} (our H200 calibration's GEMM asymptote, transferred to the A100)",
    "memory_efficiency": f"{ELEMENTWISE_EFFICIENCY} (our H200 calibration's elementwise asymptote, transferred)",
    "topology": "dgx-a100: NVLink 3 300 GB/s per direction per GPU (600 GB/s bidirectional, datasheet), "
                "HDR InfiniBand 25 GB/s per GPU; latency 1 us per NVLink step, 5 us per network step "
                "(assumptions); link efficiency 1 (datasheet rates)",
    "overlap": "none on every axis (Megatron-LM 2022: no tensor- or pipeline-communication overlap)",
    "attention": "unfused (full s x s score matrix, Megatron's fused softmax + separate dropout through HBM)",
    "optimizer": "mixed-precision Adam streaming 40 bytes per local parameter; fp32 gradients",
    "vocabulary": "51200 (logit layer timed on the last stage; embedding tied)",
}

CASES = {  # Korthikanti et al., Table 5 configurations (as stored by Calculon); times are NOT here
    "22B": dict(layers=48, hidden=6144, heads=64, head_dim=96, ffn=24576, tensor=8, pipeline=1, interleave=1,
                global_batch=4, micro_batch=4),
    "175B": dict(layers=96, hidden=12288, heads=96, head_dim=128, ffn=49152, tensor=8, pipeline=8, interleave=3,
                 global_batch=64, micro_batch=1),
}
MODES = {"full": dict(sequence_parallel=False, recompute="full"),
         "seqsel": dict(sequence_parallel=True, recompute="selective")}
SEQ_LEN, VOCAB = 2048, 51200
MESSAGE_BYTES = 2 ** 30


def gpt(name: str, case: dict) -> nets.ModelConfig:
    return nets.ModelConfig(
        name=f"gpt-{name}", vocab_size=VOCAB, d_model=case["hidden"], n_layers=case["layers"], max_seq_len=SEQ_LEN,
        attention=nets.zoo.AttentionConfig(kind="mha", n_heads=case["heads"], n_kv_heads=case["heads"],
                                           head_dim=case["head_dim"]),
        ffn=nets.zoo.FFNConfig(kind="dense", activation="gelu", d_ff=case["ffn"]), norm="layernorm",
        positions="learned", use_bias=True, tie_embeddings=True, source="Korthikanti et al., MLSys'23, Table 3")


def _git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def predict() -> dict:
    gpu = hwcost.gpu("a100-sxm", compute_efficiency=GEMM_EFFICIENCY, memory_efficiency=ELEMENTWISE_EFFICIENCY)
    topo = hwcost.parallel.topology("dgx-a100")
    rows = []
    for name, case in CASES.items():
        cfg = gpt(name, case)
        micro = case["global_batch"] // case["micro_batch"]
        for mode, options in MODES.items():
            mesh = hwcost.parallel.Parallelism(tensor=case["tensor"], pipeline=case["pipeline"], microbatches=micro,
                                               interleave=case["interleave"], **options)
            cost = hwcost.parallel.training_step(cfg, mesh, gpu, topo, global_batch=case["global_batch"],
                                                 seq_len=SEQ_LEN, attention="unfused")
            parts = {k: float(v) for k, v in cost.breakdown.items()}
            rows.append({"model": name, "mode": mode, "gpus": mesh.devices, "predicted_s": float(cost.latency_s),
                         "memory_gib": float(cost.memory_bytes) / 2 ** 30, "breakdown": parts})
            print(f"{name:>5} {mode:<7} predicted {float(cost.latency_s):7.3f} s/iteration  "
                  + " ".join(f"{k}={v:.3f}" for k, v in parts.items() if k.endswith("_s")))
    h100 = hwcost.parallel.topology("dgx-h100")
    bus = []
    for n in (2, 4, 8):
        bw, lat = h100.link(n)
        seconds = hwcost.parallel.all_reduce_s(MESSAGE_BYTES, n, bw, lat)
        busbw = float(hwcost.parallel.bus_bandwidth("all_reduce", MESSAGE_BYTES, n, seconds))
        bus.append({"gpus": n, "message_bytes": MESSAGE_BYTES, "predicted_busbw_gbs": busbw / 1e9})
        print(f"all-reduce 1 GiB over {n} H100 (NVLink 4): predicted bus bandwidth {busbw / 1e9:.1f} GB/s")
    result = {"what": "Megatron-LM GPT iteration times on DGX A100 and NCCL all-reduce bus bandwidth on H100, "
                      "predicted by hwcost.parallel before reading the published values",
              "code_commit": _git_head(), "assumptions": ASSUMPTIONS, "seq_len": SEQ_LEN, "cases": CASES,
              "iterations": rows, "allreduce_busbw": bus}
    nets.atomic_write_json(PREDICTIONS, result)
    print(f"wrote {PREDICTIONS}")
    return result


def compare() -> dict:
    predicted = json.loads(PREDICTIONS.read_text())
    published = json.loads(PUBLISHED.read_text())
    raise NotImplementedError("the comparison is added after the predictions are committed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", nargs="?", choices=("predict", "compare", "all"), default="all")
    stage = parser.parse_args().stage
    if stage in ("predict", "all"):
        predict()
    if stage in ("compare", "all"):
        compare()


if __name__ == "__main__":
    main()
