"""Apache httpd config text -> a tree of :class:`Directive` (each with its file and line).

Rules:

1. :func:`parse_text` is pure: text in, directives out. It knows httpd's syntax only
   (``\\`` line continuation, ``#`` comment lines, ``"quoted"`` arguments, ``<Section>``
   blocks) and nothing of what directives mean.
2. :func:`load_apache_config` is the only code that reads files. It follows ``Include``
   and ``IncludeOptional`` (globs and directories, relative to ``ServerRoot``) in place,
   applies ``Define`` and ``${NAME}`` the way httpd does while reading, and returns one
   tree in which every directive still names the file and line it came from.
3. Errors name the file and line: ``/etc/apache2/sites/app.conf:12: </Proxy> closes
   <VirtualHost> opened at line 3``.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["ApacheConfigError", "Directive", "load_apache_config", "parse_text"]

_MAX_INCLUDE_DEPTH = 32


class ApacheConfigError(Exception):
    """The httpd config cannot be read: bad syntax, a missing include, a loop."""

    def __init__(self, file: str, line: int, message: str) -> None:
        self.file, self.line, self.message = file, line, message
        super().__init__(f"{file}:{line}: {message}")


@dataclass(frozen=True, slots=True)
class Directive:
    """One directive, or one ``<Section>`` when ``children`` is not None."""

    name: str
    args: tuple[str, ...]
    file: str
    line: int
    children: tuple[Directive, ...] | None = field(default=None)

    @property
    def key(self) -> str:
        """The name in lower case: httpd directive names are case-insensitive."""
        return self.name.lower()

    @property
    def is_section(self) -> bool:
        return self.children is not None

    def text(self) -> str:
        """The directive as it would be written (sections as their opening line)."""
        args = " ".join(_quote(a) for a in self.args)
        body = f"{self.name} {args}".rstrip()
        return f"<{body}>" if self.is_section else body

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _quote(arg: str) -> str:
    return f'"{arg}"' if (not arg or any(c.isspace() for c in arg)) else arg


def _split_args(text: str, file: str, line: int) -> list[str]:
    """httpd's word splitting: whitespace separates, quotes group, ``\\"`` escapes."""
    args: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        if text[i] in "\"'":
            quote, i, word = text[i], i + 1, []
            while i < n and text[i] != quote:
                if text[i] == "\\" and i + 1 < n and text[i + 1] in (quote, "\\"):
                    i += 1
                word.append(text[i])
                i += 1
            if i >= n:
                raise ApacheConfigError(file, line, f"unterminated {quote} quote in: {text.strip()}")
            args.append("".join(word))
            i += 1
        else:
            start = i
            while i < n and not text[i].isspace():
                i += 1
            args.append(text[start:i])
    return args


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    """Join ``\\``-continued lines; yield (first line number, text) without comments."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        joined = " ".join(p.strip() for p in pending).strip()
        pending = []
        if joined and not joined.startswith("#"):
            yield start, joined
    if pending:
        joined = " ".join(p.strip() for p in pending).strip()
        if joined and not joined.startswith("#"):
            yield start, joined


_OPEN = re.compile(r"^<\s*([A-Za-z][\w:.-]*)(.*)>$", re.DOTALL)
_CLOSE = re.compile(r"^</\s*([A-Za-z][\w:.-]*)\s*>$")


def parse_text(text: str, file: str) -> tuple[Directive, ...]:
    """Parse one file's text. Includes are left as ``Include`` directives."""
    # Each frame: (section name, args, line, children so far).
    stack: list[tuple[str, tuple[str, ...], int, list[Directive]]] = [("", (), 0, [])]
    for number, line in _logical_lines(text):
        if line.startswith("</"):
            m = _CLOSE.match(line)
            if not m:
                raise ApacheConfigError(file, number, f"malformed section end: {line}")
            name = m.group(1)
            if len(stack) == 1:
                raise ApacheConfigError(file, number, f"</{name}> without an opening <{name}>")
            open_name, open_args, open_line, children = stack.pop()
            if open_name.lower() != name.lower():
                raise ApacheConfigError(
                    file, number, f"</{name}> closes <{open_name}> opened at line {open_line}"
                )
            stack[-1][3].append(Directive(open_name, open_args, file, open_line, tuple(children)))
        elif line.startswith("<"):
            m = _OPEN.match(line)
            if not m:
                raise ApacheConfigError(file, number, f"malformed section start (no closing '>'): {line}")
            args = tuple(_split_args(m.group(2), file, number))
            stack.append((m.group(1), args, number, []))
        else:
            words = _split_args(line, file, number)
            stack[-1][3].append(Directive(words[0], tuple(words[1:]), file, number))
    if len(stack) > 1:
        name, _, opened, _ = stack[-1]
        raise ApacheConfigError(file, opened, f"<{name}> is never closed (expected </{name}>)")
    return tuple(stack[0][3])


# -- loading (the only file I/O) --------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class _LoadState:
    server_root: Path
    defines: dict[str, str]
    stack: list[Path]


def _substitute(args: tuple[str, ...], defines: Mapping[str, str]) -> tuple[str, ...]:
    # Undefined names stay as written (httpd warns and keeps them); the translator
    # reports any value still holding ${...}.
    return tuple(_VAR.sub(lambda m: defines.get(m.group(1), m.group(0)), a) for a in args)


def _include_files(pattern: str, d: Directive, state: _LoadState, optional: bool) -> list[Path]:
    base = Path(pattern)
    if not base.is_absolute():
        base = state.server_root / base
    text = str(base)
    if glob.has_magic(text):
        found = sorted(Path(p) for p in glob.glob(text) if Path(p).is_file())
        if not found and not optional:
            raise ApacheConfigError(d.file, d.line, f"Include {pattern!r} matches no file (IncludeOptional allows that)")
        return found
    if base.is_dir():
        return sorted(p for p in base.iterdir() if p.is_file())
    if not base.exists():
        if optional:
            return []
        raise ApacheConfigError(d.file, d.line, f"Include {pattern!r}: no such file {str(base)!r}")
    return [base]


def _read(path: Path, origin: Directive | None) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        if origin is None:
            raise ApacheConfigError(str(path), 0, f"cannot read: {exc.strerror}") from None
        raise ApacheConfigError(origin.file, origin.line, f"cannot read {str(path)!r}: {exc.strerror}") from None


def _expand(directives: tuple[Directive, ...], state: _LoadState) -> tuple[Directive, ...]:
    out: list[Directive] = []
    for d in directives:
        d = replace(d, args=_substitute(d.args, state.defines))
        key = d.key
        if d.children is not None:
            out.append(replace(d, children=_expand(d.children, state)))
        elif key == "serverroot" and d.args:
            # A relative ServerRoot (unusual) is taken from where we started.
            state.server_root = state.server_root / d.args[0]
            out.append(replace(d, args=(str(state.server_root.resolve()),)))
        elif key == "define" and d.args:
            state.defines[d.args[0]] = d.args[1] if len(d.args) > 1 else ""
            out.append(d)
        elif key in ("include", "includeoptional") and d.args:
            for path in _include_files(d.args[0], d, state, optional=key == "includeoptional"):
                out.extend(_load_file(path, state, d))
        else:
            out.append(d)
    return tuple(out)


def _load_file(path: Path, state: _LoadState, origin: Directive | None) -> tuple[Directive, ...]:
    resolved = path.resolve()
    if resolved in state.stack:
        assert origin is not None
        chain = " -> ".join(str(p) for p in [*state.stack, resolved])
        raise ApacheConfigError(origin.file, origin.line, f"Include loop: {chain}")
    if len(state.stack) >= _MAX_INCLUDE_DEPTH:
        assert origin is not None
        raise ApacheConfigError(origin.file, origin.line, f"Includes nested deeper than {_MAX_INCLUDE_DEPTH}")
    state.stack.append(resolved)
    try:
        return _expand(parse_text(_read(path, origin), str(path)), state)
    finally:
        state.stack.pop()


def load_apache_config(
    path: str | os.PathLike[str], server_root: str | os.PathLike[str] | None = None
) -> tuple[Directive, ...]:
    """Read ``path`` and everything it includes into one directive tree.

    ``server_root`` is where relative includes start until a ``ServerRoot`` directive
    says otherwise (default: the directory of ``path``; Debian's is /etc/apache2).
    """
    p = Path(path)
    root = Path(server_root) if server_root is not None else p.resolve().parent
    state = _LoadState(server_root=root, defines={}, stack=[])
    return _load_file(p, state, None)
