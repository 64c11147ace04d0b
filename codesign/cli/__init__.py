"""The `codesign` command line: thin wrappers that parse arguments and call one library function.

Subcommands live in `codesign/cli/_*.py` modules, each with a `register(app)` that adds its
commands; this file only assembles them, so each concern stays in its own file. Every command
spells its common options the same way (`--out/-o`, `--target/-t`, `--json`, `--quiet`,
`--seed`; lists as one comma-separated value) and writes under `runs/` unless told otherwise:
see `codesign/cli/_options.py`. Bad input is a ValueError (`nets.InputError`), or an option
or argument the parser rejects, that `main` prints as one line, exiting with status 2.
"""

from __future__ import annotations

import sys

import typer

from codesign.cli._options import parse_formats, parse_list  # the list parsers of every command, for scripts too

__all__ = ["app", "main", "parse_formats", "parse_list"]

app = typer.Typer(
    name="codesign",
    help="Differentiable hardware/software co-design of LLMs: train networks, cost them on hardware models, "
         "and optimise both together.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register_all() -> None:
    from codesign.cli import _atts, _calibrate, _cost, _joint, _models, _train

    for module in (_models, _train, _joint, _cost, _calibrate, _atts):
        module.register(app)


_register_all()


def main(argv: list[str] | None = None) -> None:
    """Console entry point: a ValueError from bad input becomes one line on stderr and exit 2.

    `argv`: the arguments after the program name (default: the process's own), so the same
    entry point runs in-process, e.g. from a test, without starting another Python.
    """
    try:
        code = app(args=argv, prog_name="codesign", standalone_mode=False)
    except ValueError as err:
        print(f"codesign: error: {err}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("codesign: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as err:
        # the parser's usage errors (bad option, value or argument; click's UsageError, vendored or not):
        # one line too, the command and then what is wrong
        if getattr(err, "exit_code", None) != 2 or not hasattr(err, "format_message"):
            raise
        message = " ".join(err.format_message().split())
        if not message:  # no command given: the help was printed
            sys.exit(2)
        ctx = getattr(err, "ctx", None)
        where = ctx.command_path if ctx is not None else "codesign"
        print(f"codesign: error: {where}: {message} (see {where} --help)",
              file=sys.stderr)
        sys.exit(2)
    if isinstance(code, int) and code:
        sys.exit(code)
