"""`codesign zoo`: the published configs and their parameter counts (from the config alone)."""

from __future__ import annotations

import json

import typer

import nets


def zoo_rows() -> list[dict]:
    rows = []
    for name, cfg in nets.zoo.ZOO.items():
        counts = nets.count_params(cfg)
        rows.append({"name": name, "params_total": counts.total, "params_active": counts.active,
                     "attention": cfg.attention.kind, "ffn": cfg.ffn.kind, "n_layers": cfg.n_layers,
                     "d_model": cfg.d_model, "source": cfg.source})
    return rows


def zoo(as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table.")) -> None:
    """List the zoo of published model configs with total and per-token active parameters."""
    rows = zoo_rows()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'name':<18} {'attention':<9} {'ffn':<5} {'layers':>6} {'d_model':>7} {'total':>10} {'active':>10}")
    for r in rows:
        print(f"{r['name']:<18} {r['attention']:<9} {r['ffn']:<5} {r['n_layers']:>6} {r['d_model']:>7} "
              f"{_human(r['params_total']):>10} {_human(r['params_active']):>10}")
    print("active = parameters multiplied per token (unrouted experts and lookup tables excluded)")


def _human(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def register(app: typer.Typer) -> None:
    app.command("zoo")(zoo)
