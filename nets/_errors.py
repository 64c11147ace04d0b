"""One error convention for bad input, shared by every package (nets is the bottom of the stack).

Bad input raises `InputError`, a `ValueError` subclass whose message names the field, the
value and what is allowed (and the file it came from, when there is one):

    model.d_model=-3: must be a positive integer
    run.json: steps='ten': must be a positive integer

Being a `ValueError`, it is caught by the same `except ValueError` as before; the `codesign`
command line catches it once, prints that one line and exits with status 2.
"""

from __future__ import annotations

from typing import Any, NoReturn


class InputError(ValueError):
    """Bad input: `field` (a dotted name) had `value`; `allowed` says what would be accepted.

    `file` is the file the value was read from, or None for a value given in code. The
    fields stay on the exception, so a caller can report them in its own form.
    """

    def __init__(self, field: str, value: Any, allowed: str, *, file: str | None = None):
        self.field, self.value, self.allowed, self.file = field, value, allowed, file
        where = f"{file}: " if file else ""
        super().__init__(f"{where}{field}={value!r}: {allowed}")

    def __reduce__(self):  # picklable (multiprocessing, pytest-xdist) despite the keyword-only argument
        return (_rebuild, (self.field, self.value, self.allowed, self.file))


def _rebuild(field: str, value: Any, allowed: str, file: str | None) -> InputError:
    return InputError(field, value, allowed, file=file)


def fail(field: str, value: Any, allowed: str, *, file: str | None = None) -> NoReturn:
    """Raise `InputError(field, value, allowed, file=file)`: the statement form of the convention."""
    raise InputError(field, value, allowed, file=file)
