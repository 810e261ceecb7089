"""Config models of the promotion steps (``services[].promote``).

Placeholder owned by the promotion pipeline work: it must keep exporting ``Step``
(usable as ``list[Step]`` in a pydantic model) and ``FenceFailure``.
"""

from __future__ import annotations

from typing import Literal

from hotspare.configtypes import Duration, StrictModel

FenceFailure = Literal["hold", "proceed"]


class Step(StrictModel):
    name: str
    exec: list[str] | None = None
    timeout: Duration = 30.0
