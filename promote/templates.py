"""Templates in promotion steps: ``{old.name}``, ``{new.url}``, ``{epoch}``...

Rules:

1. A template is ``{name}`` or ``{group.name}`` written in lower case letters and
   underscores. Every other brace is literal text, so a JSON body such as
   ``{"node": "{old.name}"}`` needs no escaping.
2. A template whose name is not in :data:`TEMPLATE_NAMES` is an error at config load
   (``check``), never a silent empty string at promotion time.
3. Rendering never evaluates anything: no attribute access, no format specs, no
   indexing. It is a lookup in a flat dict.
4. The same values go into the environment of ``exec`` steps (:data:`ENV_NAMES`).

Pure functions, no I/O.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Mapping

__all__ = [
    "ENV_NAMES",
    "TEMPLATE_NAMES",
    "check",
    "names_in",
    "refers_to_old",
    "render",
    "render_shell",
]

# Template name -> what it means (shown in errors and docs).
TEMPLATE_NAMES: Mapping[str, str] = {
    "service": "the service name",
    "epoch": "the new epoch (the fencing token)",
    "cause": "why the promotion runs: a Cause value (probe_failed, traffic_errors, admin)",
    "trigger": "failover, switchover or manual",
    "run_id": "the id of this promotion run in the audit log",
    "old.name": "the old active's backend name",
    "old.url": "the old active's URL",
    "old.address": "the old active's address as the database sees it",
    "old.agent": "the old active's agent URL (empty if none)",
    "new.name": "the new active's backend name",
    "new.url": "the new active's URL",
    "new.agent": "the new active's agent URL (empty if none)",
    "new.health_url": "the new active's readiness probe URL",
}

# Environment variable -> template name whose value it carries (exec steps).
ENV_NAMES: Mapping[str, str] = {
    "HOTSPARE_SERVICE": "service",
    "HOTSPARE_OLD_ACTIVE": "old.name",
    "HOTSPARE_NEW_ACTIVE": "new.name",
    "HOTSPARE_OLD_URL": "old.url",
    "HOTSPARE_NEW_URL": "new.url",
    "HOTSPARE_OLD_ADDRESS": "old.address",
    "HOTSPARE_EPOCH": "epoch",
    "HOTSPARE_CAUSE": "cause",
    "HOTSPARE_TRIGGER": "trigger",
    "HOTSPARE_RUN_ID": "run_id",
}

_TEMPLATE = re.compile(r"\{([a-z_]+(?:\.[a-z_]+)?)\}")


def names_in(text: str) -> list[str]:
    """Every template name written in ``text``, in order (known or not)."""
    return _TEMPLATE.findall(text)


def check(text: str) -> str:
    """Return ``text`` unchanged, or raise ``ValueError`` naming an unknown template."""
    for name in names_in(text):
        if name not in TEMPLATE_NAMES:
            known = ", ".join("{" + n + "}" for n in TEMPLATE_NAMES)
            shown = text if len(text) <= 80 else text[:77] + "..."
            raise ValueError(f"unknown template {{{name}}} in {shown!r}; expected one of {known}")
    return text


def render(text: str, values: Mapping[str, str], quote: Callable[[str], str] | None = None) -> str:
    """Replace each template in ``text`` by its value (``quote``d when given).

    ``values`` must hold every name in :data:`TEMPLATE_NAMES`; an unknown name left in
    ``text`` (which ``check`` refuses at load) raises ``KeyError``.
    """

    def repl(m: re.Match[str]) -> str:
        value = values[m.group(1)]
        return quote(value) if quote is not None else value

    return _TEMPLATE.sub(repl, text)


def render_shell(text: str, values: Mapping[str, str]) -> str:
    """Render for ``sh -c``: every value is shell-quoted, so a value is one word."""
    return render(text, values, shlex.quote)


def refers_to_old(texts: Iterable[str]) -> bool:
    """True when any text uses an ``{old.*}`` template: the step acts on the old active."""
    return any(n.startswith("old.") for t in texts for n in names_in(t))
