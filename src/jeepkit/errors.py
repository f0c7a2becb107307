"""Error types that carry where bad input came from, so a user can fix it without reading a traceback."""

from __future__ import annotations

import difflib
from typing import Iterable


class JeepkitError(Exception):
    """Base class: every error the package raises on purpose."""


class InputError(JeepkitError):
    """Bad user input. Names the file, the record and the field at fault."""

    def __init__(self, message: str, *, file: str | None = None, record: object = None, field: str | None = None):
        where = []
        if file is not None:
            where.append(f"file {file}")
        if record is not None:
            where.append(f"record {record}")
        if field is not None:
            where.append(f"field '{field}'")
        self.file, self.record, self.field, self.detail = file, record, field, message
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ConfigError(JeepkitError):
    """A params.yaml value that cannot work (unknown model, method, missing statistics...)."""


class OptimisationError(JeepkitError):
    """Numerical failure during target optimisation or the weight solve (NaN, singular system)."""


def did_you_mean(name: object, known: Iterable[object], *, cutoff: float = 0.6, list_known: bool = False) -> str:
    """"; did you mean 'x'?" for the nearest known name; else the sorted known names (list_known) or ""."""
    names = [str(k) for k in known]
    near = difflib.get_close_matches(str(name), names, n=1, cutoff=cutoff)
    if near:
        return f"; did you mean '{near[0]}'?"
    return f"; known: {', '.join(sorted(names))}" if list_known else ""
