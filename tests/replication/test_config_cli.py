"""The replication section through the one config loader, and the two commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from replication.agent import Agent, AgentOptions
from replication.role import Role
from router.config import ConfigError, load_config, parse_config

from .kit import TOKEN, rep_config, tree

MINIMAL = """
listen: ["127.0.0.1:8080"]
admin: {listen: "127.0.0.1:9100", token: "${HOTSPARE_ADMIN_TOKEN}"}
state_file: ./hotspare-state.json
services:
  - name: app
    backends:
      - {name: a, url: "http://127.0.0.1:8001", agent: "http://127.0.0.1:9101"}
      - {name: b, url: "http://127.0.0.1:8002", agent: "http://127.0.0.1:9102"}
replication:
  token: "${HOTSPARE_REPLICATION_TOKEN}"
  roots:
    - {name: jobs, path: /var/lib/app/jobs}
    - {name: index, path: /var/lib/app/index}
"""

ENV = {"HOTSPARE_ADMIN_TOKEN": "adm", "HOTSPARE_REPLICATION_TOKEN": "rep"}


def test_design_minimal_file_is_accepted(tmp_path: Path) -> None:
    cfg = tmp_path / "hotspare.yaml"
    cfg.write_text(MINIMAL)
    config = load_config(cfg, env=ENV)
    rep = config.replication
    assert rep is not None and rep.secret() == "rep"
    assert [r.name for r in rep.roots] == ["jobs", "index"]
    assert rep.roots[0].path_for("b") == Path("/var/lib/app/jobs")
    assert rep.marker_file == ".hotspare-root" and rep.max_delete_share == 0.5


def test_token_file_per_node_paths_and_app_stop(tmp_path: Path) -> None:
    (tmp_path / "rep.token").write_text("from-file\n")
    data = {
        "listen": ["127.0.0.1:8080"],
        "services": [{"name": "app", "backends": [{"name": "a", "url": "http://127.0.0.1:1"}]}],
        "replication": {"token_file": "rep.token", "roots": [{"name": "jobs", "path": "jobs", "paths": {"b": "b/jobs"}}],
                        "app_stop": {"a": ["/bin/true"]}, "reconcile_interval": "5m"},
    }
    config = parse_config(data, base_dir=tmp_path, env={})
    rep = config.replication
    assert rep is not None and rep.secret() == "from-file"
    assert rep.roots[0].path_for("a") == tmp_path / "jobs"
    assert rep.roots[0].path_for("b") == tmp_path / "b" / "jobs"
    assert rep.stop_command("a") == ["/bin/true"] and rep.stop_command("b") is None
    assert rep.reconcile_interval == 300.0


@pytest.mark.parametrize(
    ("replication", "expected"),
    [
        ({"roots": [{"name": "jobs", "path": "/x"}]}, "replication: expected token or token_file"),
        ({"token": "t", "roots": [{"name": "jobs", "path": "/x", "typo": 1}]}, "replication.roots[0].typo: unknown key"),
        ({"token": "t", "max_delete_share": 2, "roots": []}, "replication.max_delete_share: expected a number <= 1"),
        ({"token": "t", "roots": [{"name": "a", "path": "/x"}, {"name": "a", "path": "/y"}]}, "replication.roots[1].name: expected a root name used once"),
        ({"token": "t", "quiet_period": "soon"}, "replication.quiet_period: expected a duration"),
        ({"token": "t", "router_url": "ftp://x"}, "replication.router_url: Value error, expected an http"),
    ],
)
def test_bad_replication_keys_name_their_path(replication: dict[str, object], expected: str) -> None:
    data = {"listen": ["127.0.0.1:8080"],
            "services": [{"name": "app", "backends": [{"name": "a", "url": "http://127.0.0.1:1"}]}],
            "replication": replication}
    with pytest.raises(ConfigError) as err:
        parse_config(data, env={})
    assert any(expected.replace("Value error, ", "") in e for e in err.value.errors), err.value.errors


def _hotspare(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ENV}
    return subprocess.run([sys.executable, "-m", "hotspare", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_agent_with_unknown_node_exits_2_naming_it(tmp_path: Path) -> None:
    (tmp_path / "hotspare.yaml").write_text(MINIMAL)
    r = _hotspare("agent", "-c", "hotspare.yaml", "--node", "zz", cwd=tmp_path)
    assert r.returncode == 2
    assert "--node 'zz'" in r.stderr and "a, b" in r.stderr


async def test_sync_command_mirrors_once_with_progress(tmp_path: Path) -> None:
    a = tmp_path / "a" / "jobs"
    (a / "sub").mkdir(parents=True)
    for i in range(25):
        (a / "sub" / f"f{i}.idx").write_text(f"file {i}")
    (a / "big.dat").write_bytes(os.urandom(600 * 1024))
    source = Agent(rep_config(tmp_path), AgentOptions(node="a", fixed_role=Role("source", "app", "a", 1)))
    port = await source.start()
    try:
        (tmp_path / "hotspare.yaml").write_text(f"""
listen: ["127.0.0.1:0"]
services:
  - name: app
    backends:
      - {{name: a, url: "http://127.0.0.1:1", agent: "http://127.0.0.1:{port}"}}
      - {{name: b, url: "http://127.0.0.1:2"}}
replication:
  token: "{TOKEN}"
  roots:
    - {{name: jobs, path: ./a/jobs, paths: {{b: ./b/jobs}}}}
  bundle_file_max: 256KiB
""")
        proc = await _run_async(tmp_path, "sync", "-c", "hotspare.yaml", "--node", "b", "--from", "a")
        out, err = proc
        assert "jobs: in sync; copy 26" in out, out + err
        assert "jobs files" in err and "26/26" in err, err  # tqdm draws on stderr
        assert tree(a) == tree(tmp_path / "b" / "jobs")
    finally:
        await source.stop()


async def _run_async(cwd: Path, *args: str) -> tuple[str, str]:
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hotspare", *args, cwd=cwd, env={**os.environ, **ENV},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (out, err)
    return out.decode(), err.decode()
