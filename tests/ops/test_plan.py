"""The one dry-run planner (router/admin/plan.py), as the admin API and ``hotspare
promote --dry-run`` both use it: pure, never refusing, warning about what it cannot know."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from router.admin.plan import PlanInput, make_plan
from router.admin.status import SPARE_LAG_LIMIT_SECONDS
from router.config import ServiceConfig, load_config
from tests.ops.kit import write_config


def _service(tmp_path: Path) -> ServiceConfig:
    path = write_config(tmp_path, [{"name": "a", "url": "http://127.0.0.1:1"},
                                   {"name": "b", "url": "http://127.0.0.1:2", "agent": "http://127.0.0.1:3"}],
                        promote=[{"name": "fence", "exec": ["/bin/fence", "{old.name}", "--epoch={epoch}"]}],
                        replication=True)
    return load_config(path).services[0]


def _input(svc: ServiceConfig, **kw: Any) -> PlanInput:
    base: dict[str, Any] = dict(service=svc, kind="switchover", state="active", active="a", epoch=4,
                                target="b", target_healthy=True, target_maintenance=False,
                                replication=None, refusal=None)
    return PlanInput(**{**base, **kw})


def test_the_api_answer_names_each_step_and_resolves_templates(tmp_path: Path) -> None:
    plan = make_plan(_input(_service(tmp_path)))
    answer = plan.answer()
    assert (answer["from"], answer["to"], answer["epoch"], answer["new_epoch"]) == ("a", "b", 4, 5)
    assert [s["name"] for s in answer["steps"]] == ["drain", "epoch", "promote: fence", "flip", "verify"]
    assert "/bin/fence a --epoch=5" in answer["steps"][2]["description"]
    assert answer["warnings"] == [
        "no 'agent: final-sync' step in app's promote steps: files written on a since the agents' "
        "last pass may be missing on b"]
    assert plan.pipeline[0].startswith("service app: promote a -> b (epoch 5, trigger switchover, cause admin)")


def test_what_the_cli_could_not_learn_becomes_warnings_not_silent_guesses(tmp_path: Path) -> None:
    plan = make_plan(_input(_service(tmp_path), kind="failover", state=None, active=None, epoch=None,
                            target="a", target_healthy=None))
    assert plan.old == "b" and plan.new_epoch == 0
    assert plan.warnings == ("current active unknown; assuming b",
                             "epoch unknown (router not reachable); {epoch} is shown as 0")
    assert "promote b -> a (epoch 0, trigger manual" in plan.pipeline[0]


def test_already_active_warns_once_and_a_refusal_is_a_warning(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    plan = make_plan(_input(svc, kind="failover", target="a"))
    assert "a is already the active backend of app: a promotion would change nothing" in plan.warnings
    plan = make_plan(_input(svc, kind="failover", target="a", refusal="a is already the active backend"))
    assert plan.warnings[0] == "the router would refuse this now: a is already the active backend"
    assert not any("change nothing" in w for w in plan.warnings)


def test_the_one_freshness_threshold(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    behind = {"reachable": True, "role": "sink", "lag_seconds": SPARE_LAG_LIMIT_SECONDS + 1, "in_sync": False}
    fresh = {**behind, "lag_seconds": SPARE_LAG_LIMIT_SECONDS, "in_sync": True}
    assert any(w.startswith("replication behind: b's files are 31s behind a")
               for w in make_plan(_input(svc, replication=behind)).warnings)
    assert not any("behind" in w for w in make_plan(_input(svc, replication=fresh)).warnings)
