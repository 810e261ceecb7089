"""Where the time goes, from py-spy's collapsed stacks (``py-spy record --format raw``).

Each line of that format is ``frame;frame;...;leaf COUNT`` with frames written
``function (path/to/file.py:line)``. :func:`summarise` gives, per function, its self
share (samples where it is the leaf) and its inclusive share (samples where it is
anywhere on the stack, counted once per sample), and the same per source file, so a
report can say "headers.py request_headers: 9 % inclusive".
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

__all__ = ["Profile", "format_profile", "parse_collapsed", "summarise"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_SITE = re.compile(r".*/(?:site-packages|lib/python3\.\d+)/")


@dataclass(frozen=True, slots=True)
class Profile:
    samples: int
    self_by_function: dict[str, int]
    inclusive_by_function: dict[str, int]
    self_by_file: dict[str, int]


_OURS = re.compile(r"(?:^|/)((?:hotspare|router|promote|replication)/.+)$")


def _short_file(path: str) -> str:
    path = _SITE.sub("", path)
    m = _OURS.search(path)
    return m.group(1) if m else path


def _frame_key(frame: str) -> tuple[str, str]:
    """("file.py function", "file.py") for one frame; line numbers dropped."""
    m = _FRAME.match(frame.strip())
    if m is None:
        return frame.strip(), frame.strip()
    file = _short_file(m.group("file"))
    return f"{file} {m.group('func')}", file


def parse_collapsed(text: str) -> list[tuple[list[str], int]]:
    stacks: list[tuple[list[str], int]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            raise ValueError(f"line {lineno}: expected 'frame;frame;... COUNT', got {line[:80]!r}")
        stacks.append((stack.split(";"), int(count)))
    return stacks


def summarise(text: str) -> Profile:
    self_fn: Counter[str] = Counter()
    incl_fn: Counter[str] = Counter()
    self_file: Counter[str] = Counter()
    total = 0
    for frames, count in parse_collapsed(text):
        total += count
        keys = [_frame_key(f) for f in frames]
        leaf_fn, leaf_file = keys[-1]
        self_fn[leaf_fn] += count
        self_file[leaf_file] += count
        for fn in {k[0] for k in keys}:
            incl_fn[fn] += count
    return Profile(total, dict(self_fn), dict(incl_fn), dict(self_file))


def format_profile(p: Profile, top: int = 25) -> str:
    if p.samples == 0:
        return "(no samples)"

    def table(title: str, counts: dict[str, int]) -> list[str]:
        out = [title]
        for name, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]:
            out.append(f"  {100 * n / p.samples:5.1f}%  {name}")
        return out

    lines = [f"{p.samples} samples"]
    lines += table("self time by file:", p.self_by_file)
    lines += table("self time by function:", p.self_by_function)
    lines += table("inclusive time by function:", p.inclusive_by_function)
    return "\n".join(lines)
