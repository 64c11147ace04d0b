"""The peers of scripts/bench/peers.py: GenZ and llm-analysis on a spec (units, per-op rows, read-back, points/s).

Both are imported inside the functions, so the rest of the benchmark (and its tests) runs
where they are not installed.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
import warnings

import numpy as np

from peers_cases import GIB, NA, Case, Spec

def genz_system(spec: Spec) -> dict:
    """The spec in GenZ's units: TFLOP/s (1e12), GB and GB/s as 2^30 (GenZ/unit.py binary prefixes)."""
    return {"Flops": spec.peak_flops_bf16 / 1e12, "Memory_size": spec.mem_capacity / GIB,
            "Memory_BW": spec.mem_bandwidth / GIB, "ICN": 150, "real_values": True}


def genz_readback(spec: Spec) -> dict:
    """What GenZ's System holds for `spec`, in SI units."""
    from GenZ import get_inference_system  # noqa: PLC0415
    system = get_inference_system(system_name=genz_system(spec), bits="bf16")
    return {"peak_flops_bf16": system.flops, "mem_bandwidth": system.offchip_mem_bw,
            "mem_capacity": system.off_chip_mem_size}


def genz(case: Case) -> dict:
    from GenZ import decode_moddeling, prefill_moddeling  # noqa: PLC0415
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if case.phase == "prefill":
            out = prefill_moddeling(model="llama2_7b", batch_size=case.batch, input_tokens=case.context_len,
                                    system_name=genz_system(case.spec), system_eff=1, bits="bf16")
        else:
            out = decode_moddeling(model="llama2_7b", batch_size=case.batch, input_tokens=case.context_len,
                                   output_tokens=0, Bb=1, system_name=genz_system(case.spec), system_eff=1,
                                   bits="bf16")
    b = out["Runtime_breakdown"]
    rows = {"attn_core": b.LA_layers, "attn_proj": b.QKVO_layers, "attention": b.MHA, "ffn": b.FFN, "norm": NA,
            "embed_head": b.Embedding, "total": float(out["Latency"])}
    # GenZ/operator_base.py get_roofline: "Num ops (MFLOP)" is 2 x MACs, summed into the "MACs (MFLOP)" column
    flops = float(out["summary_table"]["MACs (MFLOP)"].values[0]) * 1e6
    return {"rows_ms": {k: (None if v is None else float(v)) for k, v in rows.items()}, "flops": flops}


# ---- llm-analysis -------------------------------------------------------------------------------
def _quiet_llm_analysis() -> None:
    from llm_analysis.logger import logger  # noqa: PLC0415
    logger.setLevel(logging.ERROR)


def llm_analysis_gpu(spec: Spec):
    """The spec in llm-analysis's units: TFLOP/s (1e12), GB/s as 1e9, memory GB as 2^30 (analysis.py)."""
    from llm_analysis.config import GPUConfig  # noqa: PLC0415
    return GPUConfig(name=spec.name, mem_per_GPU_in_GB=spec.mem_capacity / GIB,
                     hbm_bandwidth_in_GB_per_sec=spec.mem_bandwidth / 1e9, intra_node_bandwidth_in_GB_per_sec=300,
                     intra_node_min_message_latency=8e-6, peak_fp16_TFLOPS=spec.peak_flops_bf16 / 1e12)


def _llm_analysis(spec: Spec):
    from llm_analysis.analysis import LLMAnalysis  # noqa: PLC0415
    from llm_analysis.config import DtypeConfig, get_model_config_by_name  # noqa: PLC0415
    _quiet_llm_analysis()
    return LLMAnalysis(get_model_config_by_name("NousResearch_Llama-2-7b-hf"), llm_analysis_gpu(spec),
                       DtypeConfig(), flops_efficiency=1.0, hbm_memory_efficiency=1.0)


def llm_analysis_readback(spec: Spec) -> dict:
    la = _llm_analysis(spec)
    return {"peak_flops_bf16": la.get_TFLOPS_per_gpu() * 1e12, "mem_bandwidth": la.get_gpu_hbm_bandwidth() * 1e9,
            "mem_capacity": la.gpu_config.mem_per_GPU_in_GB * GIB}


def llm_analysis(case: Case) -> dict:
    """llm-analysis's decode charges the whole KV cache of context + 1 tokens twice (read and write)."""
    s = _llm_analysis(case.spec).inference(batch_size_per_gpu=case.batch, seq_len=case.context_len,
                                           num_tokens_to_generate=1)
    p = case.phase + "_"
    attention = s[p + "latency_fwd_attn"] + (s["kv_cache_latency"] if case.phase == "decode" else 0.0)
    rows = {"attn_core": NA, "attn_proj": NA, "attention": attention, "ffn": s[p + "latency_fwd_mlp"],
            "norm": s[p + "latency_fwd_layernorm"],
            "embed_head": s[p + "latency_fwd_input_embedding"] + s[p + "latency_fwd_output_embedding_loss"],
            "total": s[p + "latency"]}
    return {"rows_ms": {k: (None if v is None else 1e3 * float(v)) for k, v in rows.items()},
            "flops": float(s[p + "num_flops_fwd_total"])}



def _loop_points_per_s(tool: str, path: str, call, seconds: float, windows: int = 5, seed: int = 0) -> dict:
    """Call `call(flops_scale, bandwidth_scale)` on new design points for `seconds`, in `windows`
    equal windows: the median window rate, and the best (least disturbed by other processes)."""
    rng = np.random.default_rng(seed)
    call(1.0, 1.0)  # warm-up: imports, file caches
    rates, total = [], 0
    for _ in range(windows):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / windows or count == 0:
            call(*rng.uniform(0.8, 1.25, 2))
            count += 1
        rates.append(count / (time.perf_counter() - start))
        total += count
    return {"tool": tool, "path": path, "gradients": False, "points": total, "seconds": seconds,
            "windows": windows, "points_per_s": statistics.median(rates), "best_points_per_s": max(rates)}


def _scaled(spec: Spec, flops_scale: float, bw_scale: float) -> Spec:
    return dataclasses.replace(spec, peak_flops_bf16=spec.peak_flops_bf16 * float(flops_scale),
                               mem_bandwidth=spec.mem_bandwidth * float(bw_scale))


def peer_points_per_s(case: Case, seconds: float) -> list[dict]:
    """Each peer's public entry point, and its cheapest inner path, in a timed loop."""
    from GenZ import create_full_decode_model, create_full_prefill_model, get_inference_system  # noqa: PLC0415
    from GenZ import get_model_df, get_summary_table  # noqa: PLC0415
    results = []

    def genz_public(fs, bs):
        genz(dataclasses.replace(case, spec=_scaled(case.spec, fs, bs)))

    if case.phase == "prefill":
        model_file = create_full_prefill_model(name="llama2_7b", input_sequence_length=case.context_len)
    else:
        model_file = create_full_decode_model(name="llama2_7b", input_sequence_length=case.context_len,
                                              output_gen_tokens=0)

    def genz_inner(fs, bs):
        system = get_inference_system(system_name=genz_system(_scaled(case.spec, fs, bs)), bits="bf16")
        df = get_model_df(model_file, system=system, batch_size=case.batch, intermediate_on_chip=True)
        return get_summary_table(df)["Latency (msec)"].values[0]

    la = _llm_analysis(case.spec)
    phase_seq = case.context_len if case.phase == "prefill" else 1

    def la_public(fs, bs):
        llm_analysis(dataclasses.replace(case, spec=_scaled(case.spec, fs, bs)))

    def la_inner(fs, bs):
        la.update_gpu_config(llm_analysis_gpu(_scaled(case.spec, fs, bs)))
        latency, _ = la.get_latency_fwd(case.batch, phase_seq)
        if case.phase == "decode":
            kv = la.get_memory_kv_cache_per_layer(case.batch, case.context_len + 1) * la.model_config.num_layers
            latency += 2 * kv / (la.get_gpu_hbm_bandwidth() * 1e9)
        return latency

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results.append(_loop_points_per_s("genz", f"{case.phase}_moddeling (public)", genz_public, seconds))
        results.append(_loop_points_per_s("genz", "get_model_df on a prebuilt model (inner)", genz_inner, seconds))
        results.append(_loop_points_per_s("llm_analysis", "LLMAnalysis(...).inference (public)", la_public, seconds))
        results.append(_loop_points_per_s("llm_analysis", "get_latency_fwd + KV read (inner)", la_inner, seconds))
    return results
