"""Reading a JSON input file with bounds: size checked before reading, every failure one `InputError`.

`read_json_file(path, field)` is what every loader of a user-supplied JSON file calls
(model configs, deployment files, kernel data, calibrated presets): a missing file, a file
over `max_bytes` (checked with `stat`, before anything is read), bytes that are not UTF-8,
text that is not JSON, and JSON nested too deep for the parser all end as one
`InputError` naming the file, the field and what is allowed. The parsed value is returned
as is; its structure is the caller's to check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nets._errors import fail

MAX_JSON_BYTES = 64 << 20  # 64 MiB: far above any config, deployment or kernel data file


def read_json_file(path: str | Path, field: str, *, max_bytes: int = MAX_JSON_BYTES, what: str = "a JSON file") -> Any:
    """The parsed JSON of `path`; `field` names the input in errors, `what` says what the file should be."""
    path = Path(path)
    if not path.is_file():
        fail(field, str(path), f"no such file (must be {what})")
    size = path.stat().st_size
    if size > max_bytes:
        fail(field, str(path), f"file is {size} bytes; at most {max_bytes} allowed for {what}", file=str(path))
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        fail(field, str(path), f"not UTF-8 text at byte {err.start} (must be {what})", file=str(path))
    except json.JSONDecodeError as err:
        fail(field, str(path), f"not valid JSON: {err} (must be {what})", file=str(path))
    except RecursionError:
        fail(field, str(path), f"JSON nested too deep to read (must be {what})", file=str(path))
