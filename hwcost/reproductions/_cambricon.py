"""Cambricon-LLM (Yu et al., MICRO 2024, arXiv 2409.15654): every number we can compute.

Published values (the `paper` column) are transcribed from the paper: the tile
shape for configuration S, alpha for S/M/L, Figure 9's decode tokens/s (W8A8) on S/M/L, the
FlexGen-SSD baselines and their ratios, the UFS 4.0 ceiling, the protected flip rate ~3x^2 and
the motivation figures. Ours come from `hwcost.cambricon` and `hwcost.ecc_corruption` with the zoo
configs; the only deployment input not in the note is the sequence length (2048, see
`paper_scenario`). Figure 9 and FlexGen-SSD rows are checked at `SIMULATED` (25%, the rule
for a simulated end-to-end figure).

Reported, not gated: Figure 9's OPT-66B on L and FlexGen-SSD's OPT-6.7B cell (and the two
speed-ups the paper divides from them). The paper's own L/M ratios are 3.32 (OPT-6.7B),
3.44 (Llama2-70B) and 2.25 (OPT-66B): one flash system cannot scale 66B a third less than a
smaller and a larger model. Its FlexGen-SSD cells, which stream every weight from the SSD,
give 0.8 x 6.7 = 5.4 GB/s of weights for OPT-6.7B against 0.1 x 66 = 6.6 GB/s for OPT-66B.
One model, consistent across the models, cannot match both (a test recomputes both from
the table).

Identity rows: the tile (H*, W*) and alpha for S/M/L, the paper's closed forms on its own
configurations; the protected flip rate, the majority vote of three copies restated.

Tolerances (rules in `hwcost.Row`): alpha, printed to three decimals, to 0.001; the
approximate figures ("~0.06 tok/s", "~0.14 TOP", "~70 GB") to one unit of their last
printed digit ("~70 GB", also written "more than 70 GB", is the nominal 70B at one byte a
weight: Llama-2-70B has 69.0B parameters, so it is read as approximate, not as a bound); the
decode intensity of 2 (two operations per 1-byte weight) and the tile at `EXACT`.

Parts (`hwcost.reproduce("cambricon", parts=...)`): "tiling" (tile and alpha), "throughput"
(Figure 9, FlexGen-SSD, UFS), "motivation" (the 70B per-token figures), "ecc" (the protected
flip rate).
"""

from __future__ import annotations

import nets
from hwcost.targets._cambricon import cambricon, flexgen_ssd, paper_scenario
from hwcost.targets._ecc import ecc_corruption
from hwcost.reproductions._rows import EXACT, SIMULATED, Row, register
from hwcost._workload import OPS, workload

MODELS = {"OPT-6.7B": "opt-6.7b", "OPT-66B": "opt-66b", "Llama2-70B": "llama-2-70b"}
FIGURE9 = {  # decode tokens/s on S, M, L
    "OPT-6.7B": (3.56, 10.96, 36.34), "OPT-66B": (0.4, 1.15, 2.59), "Llama2-70B": (0.3, 1.0, 3.44),
}
FLEXGEN = {"OPT-6.7B": 0.8, "OPT-66B": 0.1}  # FlexGen-SSD tokens/s
HEADLINE = (22.0, 45.0)  # "22x-45x faster than flash offloading"
TILE_S = (256.0, 2048.0)  # H*, W* for configuration S
ALPHA = {"S": 0.355, "M": 0.356, "L": 0.357}
UFS_BANDWIDTH, UFS_70B = 4e9, 0.06  # UFS 4.0 bytes/s; flash-offload ceiling for 70B, tokens/s
PROTECTED_FLIP_FACTOR = 3.0  # protected flip rate ~3 x^2
MOTIVATION = {"ops": 0.14e12, "bytes": 70e9, "intensity": 2.0}  # 70B per token: ops, bytes, ops/byte
FIG9_TOLERANCE = SIMULATED
INCONSISTENT_FIG9 = {("OPT-66B", "L"): "the paper's L/M ratio for OPT-66B is 2.25 against 3.32 (OPT-6.7B) and 3.44 "
                                       "(Llama2-70B): inconsistent with its own table"}
INCONSISTENT_FLEXGEN = {"OPT-6.7B": "the paper's FlexGen-SSD cells stream 0.8 x 6.7 = 5.4 GB/s of weights for "
                                    "OPT-6.7B against 0.1 x 66 = 6.6 GB/s for OPT-66B: inconsistent with its own table"}


@register("cambricon", part="tiling")
def _tile_alpha_rows() -> list[Row]:
    height, width = cambricon("S").tile()
    why = "the paper's closed form (H* = sqrt(cores x page), W* = channels x H*) on its own configuration S"
    same = dict(kind="identity", why=why)
    rows = [Row("tile H* for configuration S", TILE_S[0], float(height), "rel", EXACT, "bytes", **same),
            Row("tile W* for configuration S", TILE_S[1], float(width), "rel", EXACT, "bytes", **same)]
    why = ("the paper's timing closed form (t_rc, rate_rc, t_r, alpha = t_r / (t_r + t_rc)) on its own page read "
           "time, channel bandwidth, channels, cores and page size")
    for config, paper in ALPHA.items():
        rows.append(Row(f"read-compute share alpha, configuration {config}", paper, float(cambricon(config).alpha()),
                        "abs", 0.001, "", kind="identity", why=why))
    return rows


@register("cambricon", part="throughput")
def _throughput_rows() -> list[Row]:
    rows = []
    targets = {c: cambricon(c) for c in "SML"}
    for label, key in MODELS.items():
        cfg = nets.zoo.get(key)
        for config, paper in zip("SML", FIGURE9[label]):
            ours = float(targets[config].decode_tokens_per_s(cfg))
            why = INCONSISTENT_FIG9.get((label, config), "")
            rows.append(Row(f"{label} decode on {config} (Figure 9)", paper, ours, "rel", FIG9_TOLERANCE, "tokens/s",
                            kind="reported" if why else "counted", why=why))
    baseline = flexgen_ssd()
    ratios = []
    for label, paper in FLEXGEN.items():
        cfg = nets.zoo.get(MODELS[label])
        ours_flexgen = float(baseline.decode_tokens_per_s(cfg))
        ours_ratio = float(targets["L"].decode_tokens_per_s(cfg)) / ours_flexgen
        ratios.append(ours_ratio)
        why_flexgen = INCONSISTENT_FLEXGEN.get(label, "")
        why_ratio = why_flexgen or INCONSISTENT_FIG9.get((label, "L"), "")
        rows += [Row(f"{label} FlexGen-SSD decode", paper, ours_flexgen, "rel", FIG9_TOLERANCE, "tokens/s",
                     kind="reported" if why_flexgen else "counted", why=why_flexgen),
                 Row(f"{label} speed-up of L over FlexGen-SSD", FIGURE9[label][2] / paper, ours_ratio, "rel",
                     FIG9_TOLERANCE, "x", kind="reported" if why_ratio else "counted",
                     why=why_ratio and "divides an inconsistent cell: " + why_ratio)]
    rows += [Row("smallest speed-up of L over FlexGen-SSD (headline 22x)", HEADLINE[0], min(ratios), "at_least", 0.0,
                 "x"),
             Row("largest speed-up of L over FlexGen-SSD (headline 45x)", HEADLINE[1], max(ratios), "at_most", 0.0, "x")]
    llama = nets.zoo.get(MODELS["Llama2-70B"])
    rows.append(Row("Llama2-70B flash-offload ceiling over UFS 4.0", UFS_70B,
                    float(flexgen_ssd(UFS_BANDWIDTH).decode_tokens_per_s(llama)), "abs", 0.01, "tokens/s"))
    return rows


@register("cambricon", part="motivation")
def _motivation_rows() -> list[Row]:
    work = workload(nets.zoo.get(MODELS["Llama2-70B"]), paper_scenario())
    ops = float(work.total_flops(tuple(op for op in OPS if op not in ("attn_score", "attn_value"))))
    weight_bytes = float(work.total_bytes("weights"))
    return [Row("Llama2-70B weight ops per token (~0.14 TOP)", MOTIVATION["ops"], ops, "abs", 0.01e12, "ops"),
            Row("Llama2-70B weight traffic per token (~70 GB)", MOTIVATION["bytes"], weight_bytes, "abs", 10e9,
                "bytes"),
            Row("decode arithmetic intensity (8-bit weights: 2 ops per 1-byte weight)", MOTIVATION["intensity"],
                ops / weight_bytes, "rel", EXACT, "ops/byte")]


@register("cambricon", part="ecc")
def _ecc_rows() -> list[Row]:
    ber = 1e-4
    voted = float(ecc_corruption(ber)["protected_bit_error"])
    return [Row("protected bit flip rate / x^2 at x = 1e-4 (~3x^2)", PROTECTED_FLIP_FACTOR, voted / ber**2, "rel",
                EXACT, "", kind="identity",
                why="the majority vote of three copies, 3x^2 - 2x^3: the paper's own scheme restated")]
