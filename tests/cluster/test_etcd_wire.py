"""router.cluster.etcd's wire format (pure), and the client against a hostile fake
gateway on loopback: nonsense, oversized answers and lines, hangs and broken streams."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from router.cluster.etcd import Compare, EtcdClient, EtcdError, EtcdUnavailable, Op
from router.cluster.etcd_wire import (
    b64,
    compare_json,
    error_of,
    key_range,
    op_json,
    parse_kv,
    parse_txn,
    prefix_end,
)

pytestmark = pytest.mark.timeout(60)


def test_prefix_end() -> None:
    assert prefix_end(b"/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"
    assert key_range("", True) == {"key": b64(b"\0"), "range_end": b64(b"\0")}
    assert key_range("/k", False) == {"key": b64("/k")}


def test_compare_and_op_json() -> None:
    assert compare_json(Compare.mod_revision("/k", "==", 7)) == {
        "key": b64("/k"), "target": "MOD", "result": "EQUAL", "mod_revision": "7"
    }
    assert compare_json(Compare.create_revision("/k", "!=", 0))["create_revision"] == "0"
    assert compare_json(Compare.value("/k", "<", b"x"))["value"] == b64(b"x")
    assert compare_json(Compare.version("/k", ">", 2))["result"] == "GREATER"
    with pytest.raises(ValueError, match="compare op"):
        Compare.mod_revision("/k", "=", 1)
    assert op_json(Op.put("/k", b"v", lease=12)) == {"request_put": {"key": b64("/k"), "value": b64(b"v"), "lease": "12"}}
    assert op_json(Op.put("/k", b"v")) == {"request_put": {"key": b64("/k"), "value": b64(b"v")}}
    assert op_json(Op.delete("/p/", prefix=True))["request_delete_range"]["range_end"] == b64("/p0")
    assert op_json(Op.get("/k")) == {"request_range": {"key": b64("/k")}}


def test_defaults_left_out_by_proto3_are_read_as_defaults() -> None:
    kv = parse_kv({"key": b64("/k"), "mod_revision": "5"}, "t")
    assert (kv.value, kv.create_revision, kv.version, kv.lease, kv.mod_revision) == (b"", 0, 0, 0, 5)
    result = parse_txn({"header": {"revision": "9"}, "responses": [{"response_put": {}}]}, [Op.put("/k", b"")], "t")
    assert not result.succeeded and result.revision == 9 and result.responses == ([],)


@pytest.mark.parametrize(
    "node",
    [{"key": 5}, {"key": "***"}, {"key": b64("/k"), "mod_revision": "x"}, {"key": b64("/k"), "version": True}, []],
)
def test_hostile_kv_is_an_etcd_error(node: object) -> None:
    with pytest.raises(EtcdError, match=r"^t: expected"):
        parse_kv(node, "t")


def test_txn_response_count_must_match_the_branch() -> None:
    with pytest.raises(EtcdError, match="expected 2 responses, got 1"):
        parse_txn({"responses": [{"response_range": {}}]}, [Op.get("/a"), Op.get("/b")], "t")


def test_error_objects_flat_and_wrapped() -> None:
    assert error_of({"error": "etcdserver: no leader", "code": 14, "message": "etcdserver: no leader"}) == (
        14, "etcdserver: no leader"
    )
    assert error_of({"error": {"grpc_code": 5, "code": 5, "message": "lease not found"}}) == (5, "lease not found")
    assert error_of({"result": {}}) is None


RELEASED = web.AppKey("released", asyncio.Event)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def fake() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    runners: list[web.AppRunner] = []
    released = asyncio.Event()  # hung handlers return at teardown, so cleanup is prompt

    async def start(handler: Handler) -> str:
        app = web.Application()
        app[RELEASED] = released
        app.router.add_post("/v3/{path:.*}", handler)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    yield start
    released.set()
    for runner in reversed(runners):
        await runner.cleanup()


async def hang(request: web.Request) -> web.StreamResponse:
    await request.app[RELEASED].wait()
    return web.Response(status=504)


async def range_ok(request: web.Request) -> web.StreamResponse:
    return web.json_response({"header": {"revision": "3"}, "kvs": [{"key": b64("/k"), "value": b64(b"ok")}]})


async def test_hung_endpoint_gets_only_its_share_of_the_timeout(fake: Callable[[Handler], Awaitable[str]]) -> None:
    client = EtcdClient([await fake(hang), await fake(range_ok)], timeout=2.0)
    try:
        start = time.monotonic()
        kv = await client.get("/k")
        assert kv is not None and kv.value == b"ok"
        assert 0.9 <= time.monotonic() - start < 1.5  # the first endpoint had 2s / 2
        # A write sent to a hung member is not sent again: its outcome is unknown.
        client.failed(1)  # make the hung endpoint the first one tried
        start = time.monotonic()
        with pytest.raises(EtcdUnavailable, match="may or may not have been applied") as caught:
            await client.put("/k", b"v")
        assert caught.value.maybe_applied and time.monotonic() - start < 2.5
    finally:
        await client.close()


async def test_nonsense_and_oversized_answers(fake: Callable[[Handler], Awaitable[str]]) -> None:
    async def nonsense(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>proxy error</html>", status=200)

    async def huge(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"[" + b" " * (5 * 1024 * 1024) + b"]")

    async def wrong_types(request: web.Request) -> web.StreamResponse:
        return web.json_response({"header": {"revision": "3"}, "kvs": "nope"})

    for handler, says in ((nonsense, "not JSON"), (huge, "larger than")):
        client = EtcdClient([await fake(handler)], timeout=1.0)
        with pytest.raises(EtcdUnavailable, match=says):
            await client.get("/k")
        await client.close()
    client = EtcdClient([await fake(wrong_types)], timeout=1.0)
    with pytest.raises(EtcdError, match="expected a list in 'kvs'"):
        await client.get("/k")
    await client.close()


async def test_watch_line_too_long_and_stream_cut(fake: Callable[[Handler], Awaitable[str]]) -> None:
    async def long_line(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b'{"result":{"created":true}}\n')
        await resp.write(b'{"result":{"events":[' + b" " * (4 * 1024 * 1024 + 10))
        return resp

    async def cut(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b'{"result":{"created":true}}\n{"result":{"events":[{"kv":{"key":"L2s="}}]}}\n{"res')
        return resp

    client = EtcdClient([await fake(long_line)], timeout=1.0)
    with pytest.raises(EtcdError, match="longer than"):
        await anext(client.watch("/k"))
    await client.close()
    client = EtcdClient([await fake(cut)], timeout=1.0)
    stream = client.watch("/k")
    assert [e.kv.key for e in await anext(stream)] == ["/k"]
    with pytest.raises(EtcdUnavailable, match=r"ended|broke"):
        await anext(stream)
    await client.close()
