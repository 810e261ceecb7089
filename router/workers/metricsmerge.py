"""``/metrics`` as the sum of the decider and its workers.

Rules:

1. Each worker keeps its own registry (``router.metrics``, the same definitions) and
   sends a :func:`snapshot` of it to the decider every ``METRICS_INTERVAL`` seconds and
   once more as it stops. A snapshot holds the cumulative counters and histograms, and of
   the gauges only the data path's (``SUMMED_GAUGES``: in flight, client connections,
   held): the others (epoch, active backend, health) are the decider's alone.
2. :class:`MetricsMerge` is set as ``router.metrics.REGISTRY.merge`` in the decider: every
   collect (a scrape, the history sampler) yields the decider's families with each
   worker's last snapshot added, sample by sample (same name and labels), and the
   workers' series the decider has not seen appended. ``_created`` samples keep the
   decider's value: a timestamp does not add.
3. A worker that exits leaves its last counters and histograms in ``retired`` (totals
   never go down when a worker is replaced); its gauges go with it.
4. Snapshots come from processes that parse hostile bytes: :meth:`MetricsMerge.update`
   keeps only well-formed samples of families the decider defines.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

__all__ = ["METRICS_INTERVAL", "SUMMED_GAUGES", "MetricsMerge", "snapshot"]

METRICS_INTERVAL = 0.5
SUMMED_GAUGES = frozenset({"hotspare_inflight_requests", "hotspare_client_connections", "hotspare_held_requests"})
_SUMMED_TYPES = frozenset({"counter", "histogram"})

Key = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels)
Sums = dict[str, dict[Key, float]]  # family -> sample -> value


def snapshot(registry: CollectorRegistry) -> list[list[Any]]:
    """A worker's side (rule 1): ``[[family, type, [[sample, labels, value], ...]], ...]``."""
    out: list[list[Any]] = []
    for fam in registry.collect():
        if fam.type not in _SUMMED_TYPES and fam.name not in SUMMED_GAUGES:
            continue
        samples = [[s.name, s.labels, s.value] for s in fam.samples if not s.name.endswith("_created")]
        if samples:
            out.append([fam.name, fam.type, samples])
    return out


def _key(name: str, labels: Mapping[str, str]) -> Key:
    return name, tuple(sorted(labels.items()))


class MetricsMerge:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._known = {f.name: f.type for f in registry.collect()}  # before merge is set
        self._live: dict[int, Sums] = {}
        self.retired: Sums = {}

    def update(self, worker: int, snap: Any) -> None:
        sums: Sums = {}
        for fam in snap if isinstance(snap, list) else ():
            if not (isinstance(fam, list) and len(fam) == 3 and isinstance(fam[0], str) and isinstance(fam[2], list)):
                continue
            name = fam[0]
            kind = self._known.get(name)
            if kind is None or (kind not in _SUMMED_TYPES and name not in SUMMED_GAUGES):
                continue
            into = sums.setdefault(name, {})
            for s in fam[2]:
                if (isinstance(s, list) and len(s) == 3 and isinstance(s[0], str) and s[0].startswith(name)
                        and isinstance(s[1], dict) and all(isinstance(v, str) for v in s[1].values())
                        and isinstance(s[2], int | float) and not isinstance(s[2], bool)):
                    into[_key(s[0], s[1])] = float(s[2])
        self._live[worker] = sums

    def retire(self, worker: int) -> None:
        """Rule 3."""
        for name, samples in self._live.pop(worker, {}).items():
            if self._known.get(name) in _SUMMED_TYPES:
                into = self.retired.setdefault(name, {})
                for key, v in samples.items():
                    into[key] = into.get(key, 0.0) + v

    def gauge(self, name: str, labels: Mapping[str, str]) -> float:
        """The workers' sum of one gauge series (0 when none has it)."""
        key = _key(name, labels)
        return sum(s.get(name, {}).get(key, 0.0) for s in self._live.values())

    def __call__(self, own: Iterable[Metric]) -> list[Metric]:
        extra: Sums = {}
        for sums in [self.retired, *self._live.values()]:
            for name, samples in sums.items():
                into = extra.setdefault(name, {})
                for key, v in samples.items():
                    into[key] = into.get(key, 0.0) + v
        out = []
        for fam in own:
            add = extra.get(fam.name)
            if not add:
                out.append(fam)
                continue
            merged = Metric(fam.name, fam.documentation, fam.type, fam.unit)
            seen = set()
            for s in fam.samples:
                key = _key(s.name, s.labels)
                seen.add(key)
                value = s.value if s.name.endswith("_created") else s.value + add.get(key, 0.0)
                merged.add_sample(s.name, s.labels, value, s.timestamp, s.exemplar)
            for key, v in add.items():
                if key not in seen:
                    merged.add_sample(key[0], dict(key[1]), v)
            out.append(merged)
        return out
