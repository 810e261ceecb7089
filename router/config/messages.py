"""How a validation error reads: ``services[0].health.fall: expected ..., got ...``.

Pydantic's errors are translated here, once: the key path in the file's own terms,
what was expected, what was found, and for an unknown key the allowed key it most
likely meant. Pure; no I/O.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

__all__ = ["Loc", "allowed_keys", "clean_loc", "describe", "format_error", "key_path", "suggestion"]

Loc = tuple[int | str, ...]

_BOUNDS = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}


def key_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def clean_loc(loc: Sequence[int | str]) -> Loc:
    """The error's location without pydantic's own steps (union members, validators)."""
    return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))


def describe(value: Any) -> str:
    if isinstance(value, (dict, list)):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return repr(value)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds: ``X``, ``X | None``, ``list[X]``, ``Annotated[X, ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is dict:
        return None  # its keys are the user's own names, not fields
    for arg in typing.get_args(annotation) if origin in (list, typing.Union, types.UnionType, typing.Annotated) else ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def allowed_keys(root: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The keys the file may hold at ``loc`` (a mapping's path); [] when unknown."""
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        fields = {(f.alias or name): f for name, f in model.model_fields.items()}
        field = fields.get(part)
        model = _model_in(field.annotation) if field is not None else None
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items() if not f.exclude]


def suggestion(root: type[BaseModel], loc: Sequence[int | str]) -> str | None:
    """For an unknown key at ``loc``: the allowed key beside it it most likely meant."""
    if not loc:
        return None
    by_lower = {k.lower(): k for k in allowed_keys(root, loc[:-1])}
    close = difflib.get_close_matches(str(loc[-1]).lower(), list(by_lower), n=1)
    return by_lower[close[0]] if close else None


def format_error(err: Mapping[str, Any], root: type[BaseModel]) -> str:
    loc = clean_loc(err["loc"])
    path = key_path(loc)
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = describe(err.get("input"))
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "extra_forbidden":
        meant = suggestion(root, loc)
        if meant is not None:
            return f"{path}: unknown key; did you mean {meant!r}?"
        return f"{path}: unknown key (check its spelling and its place in the file)"
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()), "?")
        return f"{path}: expected a number {_BOUNDS[kind]} {bound}, got {got}"
    expected = {
        "int_parsing": "an integer", "int_type": "an integer", "int_from_float": "an integer",
        "bool_parsing": "true or false", "bool_type": "true or false",
        "string_type": "a string", "list_type": "a list",
        "model_type": "a mapping (key: value)", "model_attributes_type": "a mapping (key: value)",
        "dict_type": "a mapping (key: value)",
    }.get(kind)
    if expected is not None:
        return f"{path}: expected {expected}, got {got}"
    if kind == "too_short":
        return f"{path}: expected at least {ctx.get('min_length')} item(s), got {got}"
    if kind == "literal_error":
        return f"{path}: expected {ctx.get('expected')}, got {got}"
    if kind == "string_pattern_mismatch":
        return f"{path}: expected a value matching {ctx.get('pattern')}, got {got}"
    if kind == "value_error":
        return f"{path}: {ctx.get('error') or err['msg']}"
    return f"{path}: {err['msg'][:1].lower()}{err['msg'][1:]}, got {got}"
