"""Issue 10, replication agent: what an agent on loopback answers to hostile or odd
input. Real agents, real files, real sockets; the router is the stand-in of kit.py (a
tiny aiohttp app serving /v1/status), because the agent only reads that one document."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import wait_for

from .kit import TOKEN, Pair, auth, fake_router, rep_config, tree


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a" / "jobs", tmp_path / "b" / "jobs"
    a.mkdir(parents=True)
    (a / "seed.txt").write_text("first file, so the source marks its root\n")
    return a, b


async def _get_file(s: aiohttp.ClientSession, base: str, path: str, **headers: str) -> tuple[int, bytes]:
    async with s.get(f"{base}/v1/roots/jobs/file", params={"path": path}, headers={**auth(), **headers}) as r:
        return r.status, await r.read()


async def _bundle(s: aiohttp.ClientSession, base: str, paths: list[Any]) -> list[bytes]:
    async with s.post(f"{base}/v1/roots/jobs/bundle", json={"paths": paths}, headers=auth()) as r:
        assert r.status == 200
        return (await r.read()).split(b"\n")


async def _serves_seed(s: aiohttp.ClientSession, base: str) -> bool:
    status, body = await _get_file(s, base, "seed.txt")
    return status == 200 and body.startswith(b"first file")


# -- 1. file reads off the loop; only regular files ---------------------------------------


async def test_fifo_in_root_is_refused_quickly_and_agent_keeps_answering(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    a, _ = roots
    os.mkfifo(a / "pipe")
    async with fake_router() as router:
        pair = Pair(rep_config(tmp_path))
        try:
            await pair.start("a", router.url)
            base = pair.peers["a"]
            await wait_for(lambda: "jobs" in pair.agents["a"].sources, 10, what="source role")
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
                started = time.monotonic()
                status, body = await _get_file(s, base, "pipe")  # a blocking open would hang here
                assert status == 403 and b"FIFO" in body, (status, body)
                lines = await _bundle(s, base, ["pipe", "seed.txt"])
                assert b'"unsafe"' in lines[0] and b"FIFO" in lines[0]
                assert b'"ok"' in lines[1]
                assert time.monotonic() - started < 3
                async with s.get(base + "/v1/status", headers=auth()) as r:
                    assert r.status == 200
                assert await _serves_seed(s, base)
                async with s.get(base + "/v1/roots/jobs/manifest", headers=auth()) as r:
                    assert '"pipe"' not in await r.text()
        finally:
            await pair.close()


# -- 2. exclude, the marker and the agent's folder, on every endpoint ---------------------


async def test_hidden_paths_refused_by_file_bundle_manifest_and_feed(tmp_path: Path, roots: tuple[Path, Path]) -> None:
    a, _ = roots
    (a / "x.tmp").write_text("CONTENT excluded by name")
    (a / "cache").mkdir()
    (a / "cache" / "y.idx").write_text("CONTENT in an excluded folder")
    (a / "sub" / "cache").mkdir(parents=True)
    (a / "sub" / "cache" / "z.idx").write_text("CONTENT in a nested excluded folder")
    (a / ".hstmp-leftover").write_text("CONTENT of a temp file")
    hidden = ["x.tmp", "cache/y.idx", "sub/cache/z.idx", ".hotspare-root", ".hotspare/state.sqlite",
              ".hstmp-leftover"]
    async with fake_router() as router:
        pair = Pair(_with_exclude(tmp_path, ["*.tmp", "cache"]))
        try:
            await pair.start("a", router.url)
            base = pair.peers["a"]
            await wait_for(lambda: "jobs" in pair.agents["a"].sources, 10, what="source role")
            async with aiohttp.ClientSession() as s:
                for path in hidden:
                    status, body = await _get_file(s, base, path)
                    assert 400 <= status < 500, (path, status)
                    assert b"error" in body and b"CONTENT" not in body
                lines = await _bundle(s, base, hidden)
                assert sum(b'"unsafe"' in ln for ln in lines) == len(hidden), lines
                assert b"CONTENT" not in b"".join(lines)
                async with s.get(base + "/v1/roots/jobs/manifest", headers=auth()) as r:
                    manifest = await r.text()
                for path in ("x.tmp", "cache/y.idx", "sub/cache/z.idx", ".hotspare-root"):
                    assert f'"{path}"' not in manifest
                # The change feed: a write inside an excluded folder never shows up.
                src = pair.agents["a"].sources["jobs"]
                since, run = src.log.head, src.log.run_id
                (a / "cache" / "new.idx").write_text("new, excluded")
                (a / "sub" / "cache" / "new.idx").write_text("new, excluded")
                (a / "visible.idx").write_text("new, served")
                feed: list[str] = []

                async def saw_visible() -> bool:
                    async with s.get(base + "/v1/roots/jobs/changes", headers=auth(),
                                     params={"since": str(since), "run": run, "wait": "1"}) as r:
                        feed[:] = [c["p"] for c in (await r.json())["changes"]]
                    return "visible.idx" in feed

                await wait_for(saw_visible, 10, what="the visible file in the feed")  # type: ignore[arg-type]
                await pair.agents["a"].sources["jobs"].rescan()
                async with s.get(base + "/v1/roots/jobs/changes", headers=auth(),
                                 params={"since": str(since), "run": run}) as r:
                    feed = [c["p"] for c in (await r.json())["changes"]]
                assert "cache/new.idx" not in feed and "sub/cache/new.idx" not in feed, feed
        finally:
            await pair.close()


def _with_exclude(tmp: Path, patterns: list[str]) -> Any:
    cfg = rep_config(tmp)
    root = cfg.roots[0].model_copy(update={"exclude": patterns})
    return cfg.model_copy(update={"roots": [root]})


# -- 3. hard links -------------------------------------------------------------------------


@pytest.mark.parametrize("allow", [False, True])
async def test_hard_link_to_a_file_outside_the_root(tmp_path: Path, roots: tuple[Path, Path], allow: bool) -> None:
    a, b = roots
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("lives outside the root")
    os.link(outside, a / "hl.txt")
    async with fake_router() as router:
        pair = Pair(rep_config(tmp_path, allow_hard_links=allow))
        try:
            await pair.start("a", router.url)
            await pair.start("b", router.url)
            base = pair.peers["a"]
            await wait_for(lambda: (b / "seed.txt").exists(), 15, what="initial sync")
            sink = pair.agents["b"].sinks["jobs"]
            await wait_for(lambda: sink.fresh.in_sync, 15, what="sink in sync")
            async with aiohttp.ClientSession() as s:
                status, body = await _get_file(s, base, "hl.txt")
                lines = await _bundle(s, base, ["hl.txt"])
                async with s.get(base + "/v1/roots/jobs/manifest", headers=auth()) as r:
                    manifest = await r.text()
            if allow:
                assert status == 200 and body.startswith(b"lives outside")
                assert b'"ok"' in lines[0] and '"hl.txt"' in manifest
                assert (b / "hl.txt").read_text() == "lives outside the root"
            else:
                assert status == 403 and b"hard links" in body and b"allow_hard_links" in body
                assert b'"unsafe"' in lines[0] and b"lives outside" not in b"".join(lines)
                assert '"hl.txt"' not in manifest
                assert not (b / "hl.txt").exists()
        finally:
            await pair.close()


# -- 4. every bad input is a 4xx ---------------------------------------------------------------

BAD_FILE_REQUESTS: list[tuple[str, dict[str, str], set[int]]] = [
    ("a" * 5000, {}, {414}),
    ("d/" + "n" * 300, {}, {414}),
    ("/".join(["abcdefgh"] * 500), {}, {414}),
    ("", {}, {400}),
    ("%ZZ", {}, {404}),  # not an escape: a plain (absent) name
    ("a%00b", {}, {400}),
    ("\u00e9t\u00e9", {}, {400}),
    ("seed.txt/below", {}, {403, 404}),
    ("seed.txt", {"Range": "bytes=abc"}, {416}),
    ("seed.txt", {"Range": "bytes=0-1,5-9"}, {416}),
    ("seed.txt", {"Range": "bytes=10-5"}, {416}),
    ("seed.txt", {"Range": "bytes=0-10"}, {416}),
    ("seed.txt", {"Range": "bytes=-5"}, {416}),
    ("seed.txt", {"Range": "bytes=\u00b2-"}, {416}),
    ("seed.txt", {"Range": "items=0-"}, {416}),
    ("seed.txt", {"Range": "bytes=999999999-"}, {416}),
    ("seed.txt", {"Range": "bytes=" + "9" * 40 + "-"}, {416}),
]


async def test_bad_inputs_are_4xx_with_a_reason_and_the_agent_keeps_serving(
    tmp_path: Path, roots: tuple[Path, Path]
) -> None:
    async with fake_router() as router:
        pair = Pair(rep_config(tmp_path, app_stop=[sys.executable, "-c", "pass"]))
        try:
            await pair.start("a", router.url)
            base = pair.peers["a"]
            await wait_for(lambda: "jobs" in pair.agents["a"].sources, 10, what="source role")
            async with aiohttp.ClientSession() as s:
                for path, headers, codes in BAD_FILE_REQUESTS:
                    status, body = await _get_file(s, base, path, **headers)
                    assert status in codes, (path[:40], headers, status, body[:200])
                    assert b'"error"' in body
                others: list[tuple[str, str, Any, set[int]]] = [
                    ("GET", "/v1/roots/jobs/changes?since=abc", None, {400}),
                    ("GET", "/v1/roots/jobs/changes?wait=nan", None, {400}),
                    ("GET", "/v1/roots/jobs/changes?wait=x", None, {400}),
                    ("GET", "/v1/roots/nosuch/file?path=a", None, {404}),
                    ("POST", "/v1/roots/jobs/bundle", b"not json", {400}),
                    ("POST", "/v1/roots/jobs/bundle", b"[1, 2]", {400}),
                    ("POST", "/v1/roots/jobs/bundle", b'{"paths": "seed.txt"}', {400}),
                    ("POST", "/v1/actions/stop-app", b"not json", {400}),
                    ("POST", "/v1/actions/stop-app", b'{"epoch": "1"}', {400}),
                    ("POST", "/v1/actions/stop-app", b'{"epoch": true}', {400}),
                    ("POST", "/v1/actions/stop-app", b'{"epoch": -1}', {400}),
                    ("POST", "/v1/actions/final-sync", b'{"epoch": 1, "timeout": "x"}', {400}),
                    ("POST", "/v1/actions/final-sync", b'{"epoch": 1, "timeout": NaN}', {400}),
                    ("POST", "/v1/roots/jobs/confirm-deletes", b"", {409}),
                ]
                for method, path, data, codes in others:
                    async with s.request(method, base + path, data=data, headers=auth()) as r:
                        body = await r.read()
                        assert r.status in codes, (method, path, data, r.status, body[:200])
                        assert b'"error"' in body
                lines = await _bundle(s, base, ["a" * 5000, 7, {"x": 1}, None, "seed.txt"])
                assert [b'"unsafe"' in ln for ln in lines[:4]] == [True] * 4
                assert await _serves_seed(s, base)
        finally:
            await pair.close()


# -- 5. an epoch sent by a caller is checked against the router ------------------------------


async def test_epoch_from_a_caller_is_believed_only_as_far_as_the_router_shows(
    tmp_path: Path, roots: tuple[Path, Path]
) -> None:
    flag = tmp_path / "stopped"
    cfg = rep_config(tmp_path, role_interval="60s",  # the agent polls once: the check must ask itself
                     app_stop=[sys.executable, "-c",
                               f"import os; open({str(flag)!r}, 'w').write(os.environ['HOTSPARE_EPOCH'])"])
    async with fake_router() as router:
        pair = Pair(cfg)
        try:
            agent = await pair.start("a", router.url)
            await wait_for(lambda: agent.status()["role"] == "source", 10, what="source role")
            url = pair.peers["a"] + "/v1/actions/stop-app"
            async with aiohttp.ClientSession() as s:
                async with s.post(url, headers=auth(), json={"service": "app", "epoch": 10**12, "node": "a"}) as r:
                    body = await r.json()
                assert r.status == 409 and "router's current epoch is 1" in body["error"], body
                assert agent.max_epoch == 1 and not flag.exists()
                router.epoch = 2  # the real promotion: persisted by the router before its steps
                async with s.post(url, headers=auth(), json={"service": "app", "epoch": 2, "node": "a"}) as r:
                    assert r.status == 200, await r.text()
                assert flag.read_text() == "2" and agent.max_epoch == 2
                router.up = False
                async with s.post(url, headers=auth(), json={"service": "app", "epoch": 3, "node": "a"}) as r:
                    body = await r.json()
                assert r.status == 409 and "could not confirm" in body["error"], body
                assert agent.max_epoch == 2
                async with s.post(url, headers=auth(), json={"service": "app", "epoch": 1, "node": "a"}) as r:
                    assert r.status == 409 and "stale epoch" in (await r.json())["error"]
        finally:
            await pair.close()


# -- 6. no admin token to the router ----------------------------------------------------------


async def test_status_poll_carries_no_authorization_header(tmp_path: Path) -> None:
    from router.cli.agent import build_options
    from router.config import load_config

    async with fake_router() as router:
        cfg = tmp_path / "hotspare.yaml"
        cfg.write_text(f"""
listen: ["127.0.0.1:0"]
admin: {{listen: "127.0.0.1:0", token: "the-admin-token"}}
state_file: ./state.json
services:
  - name: app
    backends:
      - {{name: a, url: "http://127.0.0.1:1", agent: "http://127.0.0.1:1"}}
      - {{name: b, url: "http://127.0.0.1:2", agent: "http://127.0.0.1:2"}}
replication:
  token: "{TOKEN}"
  router_url: "{router.url}"
  role_interval: 100ms
  roots:
    - {{name: jobs, path: ./a/jobs}}
""")
        config = load_config(cfg)
        import argparse

        from replication.agent import Agent
        args = argparse.Namespace(node="a", init=True, role="auto", active=None, listen="127.0.0.1:0",
                                  log_level="info")
        assert config.replication is not None
        agent = Agent(config.replication, build_options(config, args))
        await agent.start()
        try:
            await wait_for(lambda: len(router.seen_headers) >= 2, 10, what="two status polls")
        finally:
            await agent.stop()
        assert all("Authorization" not in h for h in router.seen_headers), router.seen_headers
        assert not any("the-admin-token" in str(h) for h in router.seen_headers)


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by the openssl command."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:  # pragma: no cover - openssl is in the CI image
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "agent.crt", tmp_path / "agent.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                    "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


async def test_agents_over_tls_with_a_self_signed_certificate(tmp_path: Path, self_signed: tuple[Path, Path]) -> None:
    import argparse
    import ssl

    from replication.agent import Agent
    from router.cli.agent import build_options
    from router.config import load_config

    cert, key = self_signed
    a, b = tmp_path / "a" / "jobs", tmp_path / "b" / "jobs"
    a.mkdir(parents=True)
    (a / "seed.txt").write_text("over TLS")

    def write_config(a_url: str) -> Path:
        cfg = tmp_path / "hotspare.yaml"
        cfg.write_text(f"""
listen: ["127.0.0.1:0"]
admin: {{listen: "127.0.0.1:0"}}
state_file: ./state.json
services:
  - name: app
    backends:
      - {{name: a, url: "http://127.0.0.1:1", agent: "{a_url}"}}
      - {{name: b, url: "http://127.0.0.1:2", agent: "https://127.0.0.1:1"}}
replication:
  token: "{TOKEN}"
  tls: {{cert: {cert}, key: {key}, ca_file: {cert}}}
  roots:
    - {{name: jobs, path: ./a/jobs, paths: {{b: ./b/jobs}}}}
""")
        return cfg

    def args(node: str, role: str, active: str | None = None) -> argparse.Namespace:
        return argparse.Namespace(node=node, init=False, role=role, active=active, listen="127.0.0.1:0",
                                  log_level="info")

    config = load_config(write_config("https://127.0.0.1:1"))
    assert config.replication is not None
    source = Agent(config.replication, build_options(config, args("a", "source")))
    port = await source.start()
    sink: Agent | None = None
    try:
        config = load_config(write_config(f"https://127.0.0.1:{port}"))
        assert config.replication is not None
        sink = Agent(config.replication, build_options(config, args("b", "sink", "a")))
        await sink.start()
        await wait_for(lambda: tree(a) == tree(b), 15, what="the replica over TLS")
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):  # not trusted without ca_file
                await s.get(f"https://127.0.0.1:{port}/v1/status", headers=auth())
            with pytest.raises(aiohttp.ClientError):  # plain HTTP to a TLS listener
                async with s.get(f"http://127.0.0.1:{port}/v1/status", headers=auth()) as r:
                    await r.read()
            trusted = ssl.create_default_context(cafile=str(cert))
            async with s.get(f"https://127.0.0.1:{port}/v1/status", headers=auth(), ssl=trusted) as r:
                assert r.status == 200 and (await r.json())["role"] == "source"
    finally:
        if sink is not None:
            await sink.stop()
        await source.stop()
