"""Reading the deployment file: YAML, ``${NAME}`` substitution, validation, and one
report of every error (see the rules in :mod:`router.config`).

An error caused by an earlier one is not printed: a value left as ``${NAME}`` because
``NAME`` is unset fails its own check too (a DSN "not starting postgresql://"), and that
second error would only repeat the first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from router.errors import ConfigError

from .cross import ROOT_DUPLICATES, cross_errors
from .messages import Loc, clean_loc, describe, format_error, key_path, suggestion
from .sections import Config

__all__ = ["load_config", "parse_config", "unset_hint"]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Variables whose value is a shared secret: a random one is the right example value.
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY", re.IGNORECASE)


def _substitute_env(node: Any, env: Mapping[str, str], loc: Loc, unset: list[tuple[str, Loc]]) -> Any:
    if isinstance(node, str):

        def repl(m: re.Match[str]) -> str:
            if m.group(1) not in env:
                unset.append((m.group(1), loc))
                return m.group(0)
            return env[m.group(1)]

        return _ENV_REF.sub(repl, node)
    if isinstance(node, list):
        return [_substitute_env(v, env, (*loc, i), unset) for i, v in enumerate(node)]
    if isinstance(node, dict):
        return {k: _substitute_env(v, env, (*loc, str(k)), unset) for k, v in node.items()}
    return node


def _unset_error(name: str, loc: Loc) -> str:
    return (
        f"{key_path(loc)}: expected environment variable {name} to be set "
        f"(referenced as ${{{name}}}), found it unset"
    )


def unset_hint(names: list[str]) -> list[str]:
    """The one shell command that sets every unset variable (each named once)."""
    if not names:
        return []
    values = [f"{n}=$(openssl rand -hex 32)" if _SECRET_NAME.search(n) else f"{n}='...'" for n in names]
    many = len(names) > 1
    hint = [
        f"{len(names)} environment variable{'s are' if many else ' is'} unset ({', '.join(names)}); "
        f"set {'them' if many else 'it'} with:"
    ]
    hint.append("  export " + " ".join(values))
    if any(v.endswith("'...'") for v in values):
        hint.append("  (replace each '...' with its real value)")
    return hint


def _knock_ons(errors: list[Any], unset_locs: set[Loc]) -> set[int]:
    """Indexes of errors that only repeat another: a check of a value still holding an
    unset ``${NAME}`` (at its key, or its mapping's own check, like ``sql`` of its
    ``dsn``), and "required key is missing" for the key a misspelt one meant."""
    meant = set()
    for e in errors:
        loc = clean_loc(e["loc"])
        if e["type"] == "extra_forbidden" and (key := suggestion(Config, loc)) is not None:
            meant.add((*loc[:-1], key))
    out: set[int] = set()
    for i, e in enumerate(errors):
        loc = clean_loc(e["loc"])
        if e["type"] == "missing":
            if loc in meant:
                out.add(i)
        elif e["type"] != "extra_forbidden" and any(
            loc == u or (loc == u[:-1] and e["type"] == "value_error") for u in unset_locs
        ):
            out.add(i)
    return out


def parse_config(
    data: Any,
    *,
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    source: Path | None = None,
) -> Config:
    """Validate an already-parsed YAML tree. Raises :class:`ConfigError` with every error."""
    if not isinstance(data, Mapping):
        raise ConfigError([f"(top level): expected a mapping of keys, got {describe(data)}"])
    unset: list[tuple[str, Loc]] = []
    data = _substitute_env(dict(data), os.environ if env is None else env, (), unset)
    errors = [_unset_error(name, loc) for name, loc in unset]
    cross = cross_errors(data)
    config: Config | None = None
    try:
        config = Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        named_roots = any(c.startswith("replication.roots") for c in cross)
        found = exc.errors()
        knock_ons = _knock_ons(found, {loc for _, loc in unset})
        for i, e in enumerate(found):
            if i in knock_ons:
                continue
            text = format_error(e, Config)
            if named_roots and text.startswith("replication:") and ROOT_DUPLICATES in text:
                continue  # cross_errors named the entry itself
            errors.append(text)
    errors += cross
    if errors or config is None:
        names = list(dict.fromkeys(name for name, _ in unset))
        raise ConfigError(errors, source, hints=unset_hint(names))
    object.__setattr__(config, "source", source)
    return config


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice in one mapping", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the deployment file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read the config file: {exc.strerror}"], p) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{p}: expected UTF-8 text, found a bad byte at offset {exc.start}"], p) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{p}: not valid YAML: {exc}"], p) from None
    if data is None:
        raise ConfigError([f"{p}: the file is empty; expected at least 'listen' and 'services'"], p)
    return parse_config(data, base_dir=p.resolve().parent, env=env, source=p)
