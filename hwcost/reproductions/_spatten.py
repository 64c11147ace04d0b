"""SpAtten (Wang, Zhang & Han, HPCA 2021, arXiv 2012.09852): the numbers the SpAtten target can compute.

Published inputs (the `paper` column, or stated assumptions): K/V SRAM 196 KB per buffer
(2 x 1024 tokens x 64 x 12 bits); average reductions on GPT-2: tokens and values 3.8x,
heads 1.1x; 5.9% of rows re-fetch the LSBs; 8+4-bit Q/K split for GPT-2 and 6+4 for BERT;
the headline DRAM-access reduction of 10.0x. GPT-2 generation: 992 prompt tokens, 32
generated (the paper's setting). Assumptions (the paper does not print them): the
unpruned baseline stores K/V in 32-bit floats (the GPU/CPU baselines); a kept token keeps
every layer's fraction equal to the average (1/3.8 of tokens, 1/1.1 of heads); V is
fetched at the full MSB+LSB width. The 10.0x is an average over BERT and GPT-2
benchmarks while 3.8x is GPT-2's token factor; the two DRAM rows are checked at the rule
for a simulated end-to-end figure (`SIMULATED`, 25%), fixed before the result. The SRAM size,
the pruning-only product 3.8 x 1.1 and the LSB re-fetch factor restate the paper's own
inputs (identity rows, shown but not counted).

The GPT-2 row is out of that tolerance (13.2x against 10.0x): pruning composes to 4.17x
(3.8 x 1.1 = 4.18) and 32-bit K/V against 8.24 + 12 bits gives 3.16x more; the paper's
10.0x averages every benchmark, whose token pruning (1.9x) is half GPT-2's 3.8x.
"""

from __future__ import annotations

import nets
from hwcost.reproductions._rows import EXACT, SIMULATED, Row, register
from hwcost._scenario import Scenario
from hwcost.targets._spatten import dram_reduction, kv_sram_bytes, spatten_knobs, spatten_workload

GPT2_TOKEN_FACTOR, AVERAGE_TOKEN_FACTOR, HEAD_FACTOR = 3.8, 1.9, 1.1
LSB_FRACTION = 0.059
DRAM_REDUCTION = 10.0
KV_SRAM_KB = 196.0
PROMPT, GENERATED = 992, 32


def _gpt2_decode(msb: int = 8, lsb: int = 4) -> Scenario:
    return Scenario(phase="decode", batch=1, context_len=PROMPT, gen_len=GENERATED, kv_bits=msb + lsb)


@register("spatten")
def spatten_rows() -> list[Row]:
    rows = [Row("K/V SRAM per buffer (2 x 1024 x 64 x 12 bit)", KV_SRAM_KB, kv_sram_bytes() / 1000, "rel", EXACT,
                "kB", kind="identity", why="2 x 1024 x 64 x 12 bit: the paper's own buffer sizes multiplied")]
    gpt2 = nets.zoo.get("gpt2-small")
    sc = _gpt2_decode()
    knobs = spatten_knobs(gpt2.n_layers, sc, token_keep=1 / GPT2_TOKEN_FACTOR, head_keep=1 / HEAD_FACTOR)
    # pruning alone (12-bit baseline, every row re-fetching its LSBs): should compose to 3.8 x 1.1
    rows.append(Row("GPT-2 decode DRAM factor of token x head pruning alone (12-bit, all LSBs)",
                    GPT2_TOKEN_FACTOR * HEAD_FACTOR,
                    float(dram_reduction(gpt2, sc, knobs, baseline_bits=12.0, lsb_fraction=1.0)), "rel", EXACT, "x",
                    kind="identity", why="the paper's 3.8x and 1.1x are the inputs; their product is the number"))
    rows.append(Row("GPT-2-small decode DRAM reduction vs fp32 (tokens 3.8x, heads 1.1x, 8+4 bits, 5.9% LSB)",
                    DRAM_REDUCTION, float(dram_reduction(gpt2, sc, knobs, lsb_fraction=LSB_FRACTION)), "rel", SIMULATED,
                    "x"))
    bert = nets.zoo.get("bert-base")
    sc_bert = Scenario(phase="prefill", batch=1, context_len=128, kv_bits=10)
    knobs_bert = spatten_knobs(bert.n_layers, sc_bert, token_keep=1 / AVERAGE_TOKEN_FACTOR, head_keep=1 / HEAD_FACTOR)
    rows.append(Row("BERT-base DRAM reduction vs fp32 (tokens 1.9x, heads 1.1x, 6+4 bits, 5.9% LSB)",
                    DRAM_REDUCTION, float(dram_reduction(bert, sc_bert, knobs_bert, lsb_fraction=LSB_FRACTION)),
                    "rel", SIMULATED, "x"))
    # LSB re-fetch: the K traffic at 5.9% re-fetch over the all-MSB traffic, against (8 + 0.059*4)/8
    k_msb = spatten_workload(gpt2, sc, knobs, lsb_fraction=0.0).k_bytes.sum()
    k_prog = spatten_workload(gpt2, sc, knobs, lsb_fraction=LSB_FRACTION).k_bytes.sum()
    rows.append(Row("GPT-2 K traffic with 5.9% LSB re-fetch over MSB-only (8+4 bits)", 1 + LSB_FRACTION * 4 / 8,
                    float(k_prog / k_msb), "rel", EXACT, "x",
                    kind="identity", why="1 + 0.059 x 4 / 8: the paper's re-fetch share and bit split restated"))
    return rows
