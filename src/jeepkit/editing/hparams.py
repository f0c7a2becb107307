"""Typed hyperparameters: one frozen dataclass per method, its fields the only keys params.yaml may set.

A field's default is the method's only default (no `hp.get(key, default)` anywhere else); a field made
with `knob(...)` also states the value's kind and range, checked with the same rules as the rest of
params.yaml (`config.check_value`). `from_dict` refuses an unknown key with the nearest valid name, so
a misspelt `clamp_hgh` is an error rather than a silently ignored setting.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Mapping

from ..config import F, check_value
from ..errors import ConfigError, did_you_mean


def knob(kind: str, default: Any = MISSING, *, key: str | None = None, **rules: Any) -> Any:
    """A hyperparameter field: `kind` as in config.F (int, num, bool, str, ints, nums, strs), its default
    (none: required), bounds / choices, and `key`, its name in params.yaml when that is not the field's
    (`lambda` is a Python keyword)."""
    meta = {"check": F(kind, required=default is MISSING, **rules), "key": key}
    if default is MISSING:
        return field(metadata=meta)
    return field(default=tuple(default) if isinstance(default, list) else default, metadata=meta)


def _key(f) -> str:
    return f.metadata.get("key") or f.name


POS = dict(gt=0.0)
NONNEG = dict(lo=0.0)


@dataclass(frozen=True, kw_only=True)
class HParams:
    """Base of every method's hyperparameters. Lists arrive as tuples (the instance is hashable)."""

    method: ClassVar[str] = "?"

    @classmethod
    def rules(cls) -> dict[str, F]:
        """params.yaml key -> its rule."""
        return {_key(f): f.metadata.get("check", F("any")) for f in fields(cls)}

    @classmethod
    def check(cls, values: Mapping[str, Any], where: str, *, partial: bool = False) -> None:
        """Raise ConfigError naming `where.key` for an unknown key, a bad value or (unless partial) a missing one."""
        rules = cls.rules()
        for k, v in values.items():
            if k not in rules:
                raise ConfigError(f"params: {where}.{k}: unknown key of method {cls.method!r}"
                                  f"{did_you_mean(k, rules, list_known=True)}")
            check_value(rules[k], v, f"{where}.{k}")
        if not partial:
            for k, f in rules.items():
                if f.required and k not in values:
                    raise ConfigError(f"params: {where}.{k}: missing (required by method {cls.method!r})")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str | None = None) -> "HParams":
        cls.check(values, where or cls.method)
        names = {_key(f): f.name for f in fields(cls)}
        return cls(**{names[k]: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    @classmethod
    def coerce(cls, hp: "HParams | Mapping[str, Any]") -> "HParams":
        """An instance of this class from itself or from a plain mapping (tests, notebooks, benchmarks)."""
        if isinstance(hp, cls):
            return hp
        if isinstance(hp, HParams):
            raise ConfigError(f"{cls.method}: got the hyperparameters of method {hp.method!r}")
        return cls.from_dict(dict(hp))

    def replace(self, **changes: Any) -> "HParams":
        """A copy with params.yaml keys changed (checked like the file's)."""
        return type(self).from_dict({**self.as_dict(), **changes}, self.method)

    def as_dict(self) -> dict[str, Any]:
        """params.yaml keys -> values, every field (defaults included)."""
        return {_key(f): list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


@dataclass(frozen=True, kw_only=True)
class NoHParams(HParams):
    """The unedited baseline."""

    method: ClassVar[str] = "none"
    unedited: bool = knob("bool", True)
