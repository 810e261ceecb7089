"""The etcd records' codecs (router/cluster/records.py): round trips and every way a
value in etcd can be wrong, each an error naming the key and field."""

from __future__ import annotations

import json

import pytest

from router.cluster.records import (
    MAX_RECORD_BYTES,
    MemberRecord,
    PromotionRecord,
    RecordError,
    StateRecord,
)
from router.failover.hold import Refusal
from router.failover.store import Decision

KEY = "/hotspare/t/services/app/state"


def state(**over: object) -> bytes:
    doc = {"active": "a", "epoch": 3, "mode": "route", "state": "active", "refusal": None, "by": "r1", "at": 1.5}
    doc.update(over)
    return json.dumps(doc).encode()


def test_state_round_trip_and_decision() -> None:
    rec = StateRecord("b", 7, "refuse", "degraded", Refusal(503, 2, "no backend"), "r2", 1700000000.25)
    assert StateRecord.decode(rec.encode(), KEY) == rec
    assert rec.decision() == Decision("b", 7, "refuse", "degraded", Refusal(503, 2, "no backend"))
    d = Decision("a", 2, "hold", "promoting", None, persist=True)
    assert StateRecord.of(d, "r1", 5.0).decision() == Decision("a", 2, "hold", "promoting", None)
    drained = StateRecord("a", 1, "route", "active", None, "r1", 2.0, ("b",))
    assert StateRecord.decode(drained.encode(), KEY) == drained
    assert drained.decision().drained == ("b",)
    assert StateRecord.decode(state(), KEY).drained == ()  # a record of an older router


@pytest.mark.parametrize(("raw", "message"), [
    (b"", "not JSON"),
    (b"\xff", "not JSON"),
    (b"[1]", "expected a JSON object, found list"),
    (state(epoch=-1), "epoch: expected an integer 0.."),
    (state(epoch=True), "epoch: expected an integer"),
    (state(epoch="3"), "epoch: expected an integer"),
    (state(active=""), "active: expected a non-empty string"),
    (state(mode="fly"), "mode: expected one of"),
    (state(drained="b"), "drained: expected a list of distinct backend names"),
    (state(drained=["b", "b"]), "drained: expected a list of distinct backend names"),
    (state(drained=[""]), "drained: expected a list of distinct backend names"),
    (state(state="asleep"), "state: expected one of"),
    (state(at="now"), "at: expected a unix time"),
    (state(extra=1), "unknown key"),
    (state(refusal={"status": 99, "retry_after": 1, "reason": "x"}), "refusal: status"),
    (state(refusal={"status": 503, "retry_after": 1}), "refusal: reason"),
    (b"{" + b" " * MAX_RECORD_BYTES + b"}", "bytes, more than"),
])
def test_a_bad_state_record_is_an_error_naming_the_key_and_field(raw: bytes, message: str) -> None:
    with pytest.raises(RecordError, match=message) as err:
        StateRecord.decode(raw, KEY)
    assert str(err.value).startswith(KEY)


def test_promotion_round_trip_and_errors() -> None:
    rec = PromotionRecord(4, "a", "b", "probe_failed", "4-abcd", 1, "running", "r1", 2.0)
    assert PromotionRecord.decode(rec.encode(), "k") == rec
    first = PromotionRecord(4, "a", "b", "admin", None, None, "running", "r1", 2.0)
    assert PromotionRecord.decode(first.encode(), "k") == first
    doc = json.loads(rec.encode())
    with pytest.raises(RecordError, match="status: expected one of"):
        PromotionRecord.decode(json.dumps({**doc, "status": "done"}).encode(), "k")
    with pytest.raises(RecordError, match="next_step"):
        PromotionRecord.decode(json.dumps({**doc, "next_step": -2}).encode(), "k")


def test_member_round_trip_and_errors() -> None:
    rec = MemberRecord("r1", "127.0.0.1:9000", 10.0, {"app": {"a": "up", "b": "down"}}, {"app": 3}, False)
    assert MemberRecord.decode(rec.encode(), "m") == rec
    doc = json.loads(rec.encode())
    with pytest.raises(RecordError, match="views"):
        MemberRecord.decode(json.dumps({**doc, "views": {"app": {"a": "dead"}}}).encode(), "m")
    with pytest.raises(RecordError, match="epochs"):
        MemberRecord.decode(json.dumps({**doc, "epochs": {"app": -1}}).encode(), "m")
    with pytest.raises(RecordError, match="etcd_ok"):
        MemberRecord.decode(json.dumps({**doc, "etcd_ok": "yes"}).encode(), "m")
