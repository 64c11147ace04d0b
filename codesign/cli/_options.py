"""The options every `codesign` command spells the same way, and the one parser for list options.

- `--out/-o PATH`: where outputs go; without it a fresh `runs/<command>-<time>` folder (or a
  file in one), printed, so nothing lands in the working directory by accident.
- `--target/-t NAME`: a hardware target by name or preset file.
- `--json`: print the result as JSON (machine-readable) instead of a table.
- `--quiet`: no progress bars.
- `--seed`: the root PRNG seed.
- `--mesh AXIS=SIZE,...`: a device mesh (axes data, fsdp, tensor, expert, pipeline), read by
  `hwcost.parallel.parse_mesh`, whose error names the option and the bad entry. Training commands read it
  as a `codesign.parallel.ParallelConfig` (axes data, fsdp, tensor, expert).
- Lists are one comma-separated value (`--lams 0,0.01,0.1`), read by `parse_list`, whose
  error names the option, the text and what each entry must be; format lists (`--formats
  bf16,posit(8,0)`) by `parse_formats`, which keeps a posit's parenthesised comma.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

import typer

from nets import InputError

T = TypeVar("T")

JSON_HELP = "Print the result as JSON instead of a table."


def out_option(what: str) -> typer.models.OptionInfo:
    """`--out/-o`, default None (the command then writes under `runs/`); `what` finishes the help text."""
    return typer.Option(None, "--out", "-o", help=f"Where to write {what}.")


def target_option(default: str, what: str) -> typer.models.OptionInfo:
    """`--target/-t` with its default; `what` says which targets the command accepts."""
    return typer.Option(default, "--target", "-t", help=f"Hardware target: {what}.")


def json_option() -> typer.models.OptionInfo:
    return typer.Option(False, "--json", help=JSON_HELP)


def quiet_option() -> typer.models.OptionInfo:
    return typer.Option(False, "--quiet", help="No progress bars.")


def seed_option() -> typer.models.OptionInfo:
    return typer.Option(0, "--seed", help="Root PRNG seed.")


def on_nonfinite_option() -> typer.models.OptionInfo:
    return typer.Option("stop", "--on-nonfinite", help="A NaN or inf loss or gradient: 'stop' (exit 3, the last good "
                                                         "checkpoint kept) or 'skip' that update (counted in metrics).")


def corpus_option() -> typer.models.OptionInfo:
    return typer.Option("stdlib", "--corpus", help="Embedded byte corpus: stdlib (the Python standard library) or "
                                                   "stdlib+deps (it plus the Python sources of the installed "
                                                   "dependencies).")


def mesh_option(what: str) -> typer.models.OptionInfo:
    """`--mesh`, default '' (one device); `what` finishes the help text."""
    return typer.Option("", "--mesh", help="Device mesh as AXIS=SIZE pairs, e.g. data=2,tensor=4 (axes: data, fsdp, "
                                           f"tensor, expert, pipeline): {what}.")


def parse_mesh(text: str, **options):
    """The `--mesh` text as a `hwcost.parallel.Parallelism` (an `InputError` naming --mesh if bad)."""
    import hwcost

    return hwcost.parallel.parse_mesh(text, field="--mesh", **options)


def parse_list(text: str, field: str, kind: Callable[[str], T] = str, *,
               choices: tuple[str, ...] | None = None) -> tuple[T, ...]:
    """A comma-separated option as a tuple: '' gives (), blanks around entries are dropped.

    `kind` converts each entry (str, int, float); `choices` restricts them. A bad entry is an
    `InputError` naming `field`, the whole text and what an entry must be.
    """
    entries = [x.strip() for x in text.split(",") if x.strip()] if text else []
    allowed = {str: "names", int: "integers", float: "numbers"}.get(kind, kind.__name__)
    try:
        values = tuple(kind(x) for x in entries)
    except ValueError:
        raise InputError(field, text, f"must be comma-separated {allowed}, e.g. "
                                      f"{'0,0.01,0.1' if kind is float else '4,8,16' if kind is int else 'a,b'}") \
            from None
    if choices is not None:
        for v in values:
            if v not in choices:
                raise InputError(field, text, f"entry {v!r} is not one of {', '.join(choices)}")
    return values


def parse_formats(text: str, field: str) -> tuple[str, ...]:
    """A comma-separated list of number format names; commas inside parentheses belong to the name
    (`bf16,posit(8,0),mxfp4`). An unknown name is an `InputError` listing the known ones."""
    from nets.formats import FORMAT_NAMES, get_format

    entries, depth, current = [], 0, ""
    for ch in text or "":
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            entries.append(current)
            current = ""
        else:
            current += ch
    entries = [e.strip() for e in entries + [current] if e.strip()]
    for name in entries:
        try:
            get_format(name)
        except ValueError:
            raise InputError(field, text, f"entry {name!r} is not one of {', '.join(FORMAT_NAMES)} or a "
                                          "posit(n,es) with 2 <= n <= 16, 0 <= es <= 3") from None
    return tuple(entries)


def out_dir(out: Path | str | None, command: str) -> Path:
    """`out`, or a fresh `runs/<command>-<time>` folder (not created)."""
    from codesign.training._io import fresh_run_dir

    return Path(out) if out else fresh_run_dir(command)
