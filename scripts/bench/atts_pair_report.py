"""The report side of `atts_gpu_pair.py`: the per-question arrays of every accuracy run (runs.npz), the judged turns
whose own bank is too small, and the readable table of the report so far."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from nets import atomic_write
from codesign.atts import format_bench, joint_min_bank


class RunStore:
    """runs.npz: the per-question arrays of every accuracy run, rewritten atomically after each."""

    def __init__(self, path: Path, problems):
        self.path, self.arrays = path, {"test/n_steps": np.asarray([p.n_steps for p in problems], np.int16)}
        if problems and hasattr(problems[0], "digits"):
            self.arrays["test/digits"] = np.asarray([p.digits for p in problems], np.int8)

    def accuracy_by_length(self, m: int) -> dict:
        """Per run at `m`: accuracy of the questions of each chain length (n_steps), and how many there are."""
        steps = self.arrays["test/n_steps"]
        runs = sorted({k.split("/")[1] for k in self.arrays if k.startswith(f"m{m}/")})
        out = {"n": {str(n): int((steps == n).sum()) for n in np.unique(steps)}}
        for label in runs:
            correct = self.arrays[f"m{m}/{label}/correct"]
            out[label] = {str(n): float(correct[steps == n].mean()) for n in np.unique(steps)}
        return out

    def keep(self, m: int, with_scores: bool):
        def store(label, result):
            self.arrays[f"m{m}/{label}/levels"] = result.levels.astype(np.int8)
            self.arrays[f"m{m}/{label}/correct"] = result.correct
            if with_scores:
                self.arrays[f"m{m}/{label}/scores"] = result.scores.astype(np.float32)
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **self.arrays)
            atomic_write(self.path, buffer.getvalue())
        return store


def under_calibrated(report: dict, counts: list[int]) -> dict:
    """Per run: the judged turns (>= min_turn_n test chunks) whose own bank is below joint_min_bank(alpha, judged)."""
    out = {}
    for label, e in report.get("accuracy", {}).items():
        if "rejection" in e and label.startswith("atts"):
            rj = e["rejection"]
            judged = [t for t, n in enumerate(rj["n_by_turn"]) if n >= report["min_turn_n"]]
            need = joint_min_bank(e["alpha"], max(len(judged), 1))
            out[label] = {"min_bank": need, "turns": [t for t in judged if counts[t] < need]}
    return out


def summary(r: dict) -> str:
    """The readable table of the report so far."""
    lines = [f"ATTS, a realistic pair in one call on {r['device']} ({r['backend']}), budget {r['budget_s']:.0f} s, "
             f"{r.get('elapsed_s', 0):.0f} s used" + ("" if r["complete"] else " (PARTIAL)")]
    ph = r["phases"]
    for role in ("target", "draft"):
        if f"train_{role}" in ph:
            t = ph[f"train_{role}"]
            lines.append(f"{role:<7} {t['params']:>12,} params  {t['steps_done']:>6} steps  test step acc "
                         f"{t['test']['step']:.4f}  answer acc {t['test']['answer']:.4f}")
    if "level" in ph:
        lv = ph["level"]
        lines.append(f"chain level {lv['level']:.3f} ({lv['chosen']}, aim {lv['aim']}): target greedy exact-match by "
                     "width " + ", ".join(f"{w}: {a['exact']:.3f}" for w, a in lv["by_width"].items())
                     + f"; on the {lv['test_n']} test problems {lv['test_greedy']['exact']:.3f}"
                     + ("" if lv["greedy_exact_in_40_80"] else " (OUTSIDE 40-80%)"))
    if "call_ratio" in ph:
        c = ph["call_ratio"]
        lines.append(f"per call at {c['rows']} rows: draft decode {c['draft_decode_ms']:.3f} ms, target decode "
                     f"{c['target_decode_ms']:.3f} ms, target score ({c['score_width']} bytes) {c['target_score_ms']:.3f} ms; "
                     f"decode ratio {c['decode_ratio']:.1f}x ({'meets' if c['meets_10x'] else 'BELOW'} the 10x required)")
    if "calibration" in ph:
        c = ph["calibration"]
        lines.append(f"calibration: {c['questions']} questions x m {c['m']}; scores by turn {c['count_by_turn']}")
    if "evaluation" in ph or "evaluation_partial" in r:
        e = ph.get("evaluation", r.get("evaluation_partial"))
        lines += ["", format_bench(e["bench"])]
        base = e["bench"]["accuracy"].get("target_only")
        if base:
            lines += ["", f"{'run':<22} {'ms/question':>11} {'tokens/s':>10} {'vs target-only':>14}  (batched runs)"]
            for label, a in e["bench"]["accuracy"].items():
                lines.append(f"{label:<22} {a['wall_s_per_question'] * 1e3:>11.3f} {a['tokens_per_s']:>10.0f} "
                             f"{base['wall_s_per_question'] / a['wall_s_per_question']:>13.2f}x")
        by_len = e.get("accuracy_by_chain_length")
        if by_len:
            lines += ["", "accuracy by chain length (steps: questions): "
                      + ", ".join(f"{n}: {k}" for n, k in by_len["n"].items())]
            for label, acc in by_len.items():
                if label != "n":
                    lines.append(f"{label:<22} " + " ".join(f"{a:.2f}" for a in acc.values()))
        for label, u in e.get("under_calibrated", {}).items():
            lines.append(f"{label}: judged turns with a bank below {u['min_bank']}: {u['turns'] or 'none'}")
    if r.get("sweep"):
        lines += ["", f"sweep over m (same rows per batch): {'m':>3} {'run':<15} {'accuracy':>8} {'diff [95% CI]':>26} "
                      f"{'takeover':>8} {'ms/question':>11} {'tokens/s':>9}"]
        for m, entry in r["sweep"].items():
            if "skipped" in entry:
                lines.append(f"{'':<34}{m:>3} skipped: {entry['skipped']}")
                continue
            for label, a in entry["bench"]["accuracy"].items():
                ci = (f"{a['diff_vs_target']:+.3f} [{a['ci95'][0]:+.3f}, {a['ci95'][1]:+.3f}]" if "ci95" in a else "")
                lines.append(f"{'':<34}{m:>3} {label:<15} {a['accuracy']:>8.4f} {ci:>26} {a['takeover_rate']:>8.3f} "
                             f"{a['wall_s_per_question'] * 1e3:>11.3f} {a['tokens_per_s']:>9.0f}")
            if entry["bench"].get("skipped"):
                lines.append(f"{'':<34}{m:>3} not started: {', '.join(entry['bench']['skipped'])}")
    if "latency" in ph:
        lines += ["", "latency regime (one question at a time):", format_bench(ph["latency"]["bench"])]
    return "\n".join(lines)
