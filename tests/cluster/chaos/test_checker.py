"""The chaos checker on synthetic records: each kind of violation is found, and a clean
record has none (so a chaos test passing means something)."""

from __future__ import annotations

import json
from pathlib import Path

from .checker import check
from .records import Answer, EtcdEvent, Sent, StepRun, read_answers, read_steps

P = "/hs"
K = f"{P}/services/app/"


def ans(t: float, backend: str, epoch: str, req: str, method: str = "GET", router: str = "r1") -> Answer:
    return Answer(t, backend, epoch, router, req, method)


def sent(req: str, t0: float, t1: float, epoch: str, backend: str = "a", router: str = "r1",
         status: int | None = 200) -> Sent:
    return Sent(router, req, "GET", t0, t1, status, backend, epoch)


def put(rev: int, key: str, value: object) -> EtcdEvent:
    raw = value.encode() if isinstance(value, str) else json.dumps(value).encode()
    return EtcdEvent(rev, K + key, "put", raw)


def state(rev: int, epoch: int, active: str, by: str, at: float = 0.0) -> EtcdEvent:
    return put(rev, "state", {"active": active, "epoch": epoch, "mode": "route", "by": by, "at": at})


CLEAN_HISTORY = [put(2, "decider", "r1"), state(3, 0, "a", "r1", 10.0), state(5, 1, "b", "r1", 20.0),
                 EtcdEvent(6, K + "decider", "delete", b""), put(7, "decider", "r2"), state(8, 1, "b", "r2", 30.0)]


def test_a_clean_record_has_no_violation() -> None:
    answers = [ans(1.0, "a", "0", "r1-1"), ans(2.0, "b", "1", "r1-2", "POST"), ans(2.1, "b", "1", "r2-1",
               router="r2")]
    records = [sent("r1-1", 0.9, 1.1, "0"), sent("r1-2", 1.9, 2.1, "1", "b"), sent("r1-3", 2.0, 2.5, "", "",
               status=503), sent("r2-1", 2.0, 2.2, "1", "b", "r2")]
    steps = [StepRun("start", "mark", 1, "1-x", "r1", 10), StepRun("end", "mark", 1, "1-x", "r1", 10)]
    v = check(answers, records, steps, [{"epoch": 1}, {"epoch": 1, "resumes": "1-x"}], CLEAN_HISTORY, P)
    assert v.violations == [], v.summary()
    assert v.failed == {"r1": 1} and v.sent == {"r1": 3, "r2": 1}
    assert v.epochs == {0: "a", 1: "b"}
    assert v.state_epochs == [(0, "a", 10.0), (1, "b", 20.0)]


def test_one_epoch_answered_by_two_backends() -> None:
    v = check([ans(1.0, "a", "3", "r1-1")], [sent("r2-1", 1.0, 1.1, "3", "b", "r2")], [], [], [], P)
    assert v.violations == ["two-backends: epoch 3 answered by ['a', 'b']"]


def test_an_answer_without_an_epoch() -> None:
    v = check([ans(1.0, "a", "", "r1-7")], [], [], [], [], P)
    assert len(v.violations) == 1 and v.violations[0].startswith("no-epoch: a answered r1-7")


def test_epoch_backwards_only_after_an_answer() -> None:
    # r1-2 is sent while r1-1 (epoch 2) is in flight: any order is allowed.
    concurrent = [sent("r1-1", 0.0, 1.0, "2"), sent("r1-2", 0.5, 0.6, "1")]
    assert check([], concurrent, [], [], [], P).violations == []
    # r1-3 is sent after r1-1's answer came back and carries an older epoch.
    backwards = [*concurrent, sent("r1-3", 1.5, 1.6, "1"), sent("r2-1", 1.5, 1.6, "1", router="r2")]
    v = check([], backwards, [], [], [], P)
    assert v.violations == ["epoch-backwards: r1: r1-3 sent at 1.500 got epoch 1 after r1-1 got 2"]


def test_a_step_or_a_run_twice_for_one_epoch() -> None:
    steps = [StepRun("start", "mark", 4, "4-x", "r1", 10), StepRun("start", "mark", 4, "4-y", "r2", 11)]
    v = check([], [], steps, [{"epoch": 4}, {"epoch": 4}, {"epoch": 5}], [], P)
    assert v.violations == ["step-twice: step mark started 2 times for epoch 4",
                            "step-twice: 2 promotion runs started for epoch 4 (audit logs)"]


def test_a_post_executed_twice() -> None:
    v = check([ans(1.0, "a", "1", "r1-5", "POST"), ans(1.2, "b", "1", "r1-5", "POST"),
               ans(1.3, "b", "1", "r1-6", "GET"), ans(1.4, "b", "1", "r1-6", "GET")], [], [], [], [], P)
    assert "post-twice: POST r1-5 executed 2 times" in v.violations
    assert not any("r1-6" in x for x in v.violations)  # a replayed GET is allowed


def test_state_writes_by_a_deposed_decider_or_going_backwards() -> None:
    history = [put(2, "decider", "r1"), state(3, 1, "a", "r1"), EtcdEvent(4, K + "decider", "delete", b""),
               put(5, "decider", "r2"), state(6, 2, "b", "r1"), state(7, 1, "a", "r2"), state(8, 2, "a", "r2"),
               put(9, "promotion", {"epoch": 2, "status": "running", "by": "r3"})]
    v = check([], [], [], [], history, P)
    assert v.violations == [
        "state-write: rev 6: state written by 'r1' while the decider was 'r2'",
        "state-write: rev 7: state epoch went from 2 down to 1",
        "state-write: rev 8: epoch 2 routed to a, earlier to b",
        "state-write: rev 9: promotion written by 'r3' while the decider was 'r2'",
    ]


def test_a_promotion_record_in_hold_is_no_second_active_but_a_reused_token_is_noted() -> None:
    hold = put(3, "state", {"active": "a", "epoch": 1, "mode": "hold", "by": "r1"})
    run = put(4, "promotion", {"epoch": 1, "old": "a", "new": "b", "status": "running", "by": "r1"})
    history = [put(2, "decider", "r1"), hold, run, state(5, 1, "b", "r1")]
    v = check([], [], [], [], history, P)
    assert v.violations == [] and v.notes == []
    history = [put(2, "decider", "r1"), hold, run, state(5, 1, "a", "r1")]
    v = check([], [], [], [], history, P)
    assert v.violations == [] and v.notes == ["rev 5: epoch 1 was handed to a promotion of b, then routed to a"]


def test_readers_skip_torn_lines(tmp_path: Path) -> None:
    log = tmp_path / "a.answers"
    log.write_text(json.dumps({"t": 1.0, "b": "a", "e": "1", "r": "r1", "q": "r1-1", "m": "GET"}) + "\n{\"t\": 2")
    assert read_answers(log) == [ans(1.0, "a", "1", "r1-1")]
    runs = tmp_path / "runs"
    runs.write_text("start mark 3 3-ab r1 77\nend mark 3 3-ab r1 77\nstart mark")
    assert [s.phase for s in read_steps(runs)] == ["start", "end"]
    assert read_answers(tmp_path / "missing") == []
