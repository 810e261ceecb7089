"""deploy/: the files an operator installs, checked with the real tools.

systemd-analyze and promtool run for real (Debian's systemd and prometheus packages,
both in scripts/system-deps). The keepalived check script runs for real against a small
aiohttp server standing in for the router's admin API (the router is built elsewhere).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from replication.metrics import AgentMetrics
from router.metrics import REGISTRY

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
VENV_HOTSPARE = Path(sys.executable).with_name("hotspare")


def need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (./scripts/system-deps installs it)")
    return path


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, **kw)


# -- systemd -------------------------------------------------------------------------


def verified_copy(unit: Path, dest: Path) -> Path:
    """The unit with ExecStart pointing at this venv's hotspare: systemd-analyze verify
    refuses a unit whose program does not exist, and /opt/hotspare is not installed here."""
    assert "/opt/hotspare/.venv/bin/hotspare" in unit.read_text()
    out = dest / unit.name
    out.write_text(unit.read_text().replace("/opt/hotspare/.venv/bin/hotspare", str(VENV_HOTSPARE)))
    return out


@pytest.mark.parametrize(
    ("unit", "verify_as"),
    [("hotspare-router.service", "hotspare-router.service"),
     ("hotspare-agent@.service", "hotspare-agent@a.service")],
)
def test_systemd_units_verify(unit: str, verify_as: str, tmp_path: Path) -> None:
    tool = need("systemd-analyze")
    assert VENV_HOTSPARE.exists()
    verified_copy(DEPLOY / "systemd" / unit, tmp_path)
    # An instance name loads the template from the same folder.
    result = run([tool, "verify", str(tmp_path / verify_as)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # Unknown keys are only warnings (exit 0): an empty stderr proves there are none.
    assert result.stderr.strip() == ""


def test_systemd_verify_would_catch_a_typo(tmp_path: Path) -> None:
    """Negative control: the check above can fail."""
    tool = need("systemd-analyze")
    unit = verified_copy(DEPLOY / "systemd" / "hotspare-router.service", tmp_path)
    unit.write_text(unit.read_text().replace("ProtectHome=yes", "ProtectHom=yes"))
    result = run([tool, "verify", str(unit)], cwd=tmp_path)
    assert "Unknown key 'ProtectHom'" in result.stderr


def test_systemd_units_are_sandboxed() -> None:
    for name in ("hotspare-router.service", "hotspare-agent@.service"):
        text = (DEPLOY / "systemd" / name).read_text()
        for option in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                       "PrivateTmp=yes", "RestrictAddressFamilies=", "SystemCallFilter=@system-service"):
            assert option in text, f"{name} lacks {option}"
        assert re.search(r"^User=hotspare$", text, re.M), name
    agent = (DEPLOY / "systemd" / "hotspare-agent@.service").read_text()
    assert "--node %i" in agent


# -- example deployment file -----------------------------------------------------------

DISTRICT_ENV = {
    "HOTSPARE_ADMIN_TOKEN": "admin-secret",
    "HOTSPARE_REPLICATION_TOKEN": "replication-secret",
    "HOTSPARE_DB_DSN": "postgresql://fence:pw@db.district.example:5432/library",
}


def test_district_example_passes_check_config() -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **DISTRICT_ENV}
    result = run([str(VENV_HOTSPARE), "check-config", str(DEPLOY / "examples" / "district.yaml")], env=env)
    assert result.returncode == 0, result.stderr
    assert "OK (1 service(s): library)" in result.stdout


@pytest.mark.parametrize("example", ["minimal", "district", "pair-r1", "pair-r2"])
def test_examples_check_as_shipped_with_the_readme_command(example: str) -> None:
    # The command README prints, run from the repository in an environment without
    # any HOTSPARE_* variable (a fresh machine).
    documented = re.search(r"^\.venv/bin/hotspare (check-config --env-file (\S+) )deploy/examples/district\.yaml$",
                           (REPO / "README.md").read_text(), re.M)
    assert documented is not None, "README shows how to check an example"
    args = [*documented.group(1).split(), f"deploy/examples/{example}.yaml"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = subprocess.run([str(VENV_HOTSPARE), *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"deploy/examples/{example}.yaml: OK (1 service(s): " in result.stdout


def test_the_pair_examples_differ_only_in_the_router_name() -> None:
    r1, r2 = (yaml.safe_load((DEPLOY / "examples" / f"pair-{n}.yaml").read_text()) for n in ("r1", "r2"))
    assert (r1["cluster"]["name"], r2["cluster"]["name"]) == ("r1", "r2")
    r2["cluster"]["name"] = "r1"
    assert r1 == r2
    assert len(r1["cluster"]["etcd"]["endpoints"]) == 3  # three etcd members (docs/cluster.md)
    assert all(e.startswith("https://") for e in r1["cluster"]["etcd"]["endpoints"])


def test_district_example_without_secrets_exits_2_naming_them() -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = run([str(VENV_HOTSPARE), "check-config", str(DEPLOY / "examples" / "district.yaml")], env=env)
    assert result.returncode == 2
    for var in DISTRICT_ENV:
        assert f"expected environment variable {var} to be set" in result.stderr
    assert "3 configuration errors:" in result.stderr  # one per reference, no knock-on
    assert "3 environment variables are unset (HOTSPARE_ADMIN_TOKEN, HOTSPARE_DB_DSN, HOTSPARE_REPLICATION_TOKEN)" in result.stderr


# -- Prometheus -------------------------------------------------------------------------


def test_promtool_check_rules_and_config() -> None:
    tool = need("promtool")
    prom = DEPLOY / "prometheus"
    result = run([tool, "check", "rules", "hotspare-rules.yml"], cwd=prom)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 14 rules found" in result.stdout + result.stderr
    result = run([tool, "check", "config", "prometheus.yml"], cwd=prom)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    tool = need("promtool")
    result = run([tool, "test", "rules", "hotspare-rules.test.yml"], cwd=DEPLOY / "prometheus")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_required_alert_exists_and_is_unit_tested() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "hotspare-rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    required = {"HotspareSpareNotReady", "HotspareReplicationLagHigh", "HotspareFailoverHappened",
                "HotsparePromotionFailed", "HotspareFencingOnHold"}
    assert required <= alerts
    tests = yaml.safe_load((DEPLOY / "prometheus" / "hotspare-rules.test.yml").read_text())
    tested = {a["alertname"] for t in tests["tests"] for a in t.get("alert_rule_test", [])}
    assert alerts == tested, f"alerts without a promtool unit test: {sorted(alerts - tested)}"


def exported_metric_names() -> set[str]:
    """Every sample name the router and an agent can expose, from the registries themselves."""
    names: set[str] = {"up"}
    families = list(REGISTRY.collect()) + list(AgentMetrics().registry.collect())
    for fam in families:
        suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
                    "summary": ["_sum", "_count", "_created"]}.get(fam.type, [""])
        names.update(fam.name + s for s in suffixes)
    return names


_PROMQL_FUNCS = {
    "sum", "max", "min", "avg", "count", "rate", "increase", "changes", "histogram_quantile",
    "by", "without", "on", "ignoring", "group_left", "group_right", "or", "and", "unless",
    "humanizeDuration", "le",
}


def metric_names_in(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    return {n for n in re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr) if n not in _PROMQL_FUNCS}


def dashboard_exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr" and isinstance(v, str):
                yield v
            elif k == "query" and isinstance(v, dict) and isinstance(v.get("query"), str):
                yield re.sub(r"^label_values\((\w+),.*\)$", r"\1", v["query"])
            else:
                yield from dashboard_exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from dashboard_exprs(v)


def test_metric_name_extraction() -> None:
    assert metric_names_in('sum by (service) (rate(hotspare_x_total{a="b"}[5m])) > 0 or up') == {
        "hotspare_x_total", "up"}


def test_rules_use_only_exported_metric_names() -> None:
    known = exported_metric_names()
    assert "hotspare_replication_deletes_refused_total" in known  # counters gain _total
    rules = yaml.safe_load((DEPLOY / "prometheus" / "hotspare-rules.yml").read_text())
    for g in rules["groups"]:
        for r in g["rules"]:
            unknown = metric_names_in(r["expr"]) - known
            assert not unknown, f"{r['alert']}: unknown metric(s) {sorted(unknown)}"


def test_grafana_dashboard_is_valid_and_uses_existing_metrics() -> None:
    dash = json.loads((DEPLOY / "grafana" / "hotspare-dashboard.json").read_text())
    assert dash["title"] == "hotspare" and dash["uid"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = list(dashboard_exprs(dash))
    assert len(exprs) >= 20
    known = exported_metric_names()
    used: set[str] = set()
    for expr in exprs:
        expr = expr.replace("$__rate_interval", "5m")
        names = metric_names_in(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= known, f"unknown metric(s) {sorted(names - known)} in {expr!r}"
        used |= names
    # The DESIGN's named metrics are all on the dashboard.
    for name in ("hotspare_backend_up", "hotspare_active_backend", "hotspare_epoch",
                 "hotspare_failovers_total", "hotspare_requests_total",
                 "hotspare_request_duration_seconds_bucket", "hotspare_held_requests",
                 "hotspare_replayed_requests_total", "hotspare_replication_lag_seconds"):
        assert name in used, name
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"


# -- keepalived -------------------------------------------------------------------------


@pytest.fixture
async def admin_api() -> AsyncIterator[str]:
    """Stand-in for the router's admin API: GET /v1/status only (``/cut/v1/status``: a
    router of a pair cut off from etcd, answered with the router's own JSON writer)."""
    service = {"name": "app", "active": "a", "epoch": 1, "state": "active", "backends": []}

    async def status(request: web.Request) -> web.Response:
        return web.json_response({"services": [service], "cluster": None})

    async def cut(request: web.Request) -> web.Response:
        cluster = {"name": "r2", "etcd": {"ok": False, "endpoints": [], "error": "no endpoint answered"},
                   "members": [], "deciders": {"app": None}, "this_router_decides": []}
        return web.json_response({"services": [service], "cluster": cluster})

    app = web.Application()
    app.router.add_get("/v1/status", status)
    app.router.add_get("/cut/v1/status", cut)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def run_check(admin_url: str, state: str, tmp_path: Path, mode: str = "pair",
                    config: str = "none.yaml") -> tuple[int, str]:
    mark = tmp_path / "keepalived.state"
    mark.write_text(state + "\n")
    env = {"PATH": "/usr/bin:/bin", "HOTSPARE_ADMIN_URL": admin_url, "HOTSPARE_KEEPALIVED_STATE": str(mark),
           "HOTSPARE_CONFIG": str(DEPLOY / "examples" / config)}
    if mode:
        env["HOTSPARE_KEEPALIVED_MODE"] = mode
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh", str(DEPLOY / "keepalived" / "check-hotspare.sh"),
        env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_keepalived_check_script(admin_api: str, tmp_path: Path) -> None:
    need("curl")
    assert (await run_check(admin_api, "MASTER", tmp_path))[0] == 0
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()
    code, out = await run_check(dead, "MASTER", tmp_path)
    assert code == 1, out
    # A pair: both routers always run, so a dead one fails on a BACKUP too (it must not
    # take the address) ...
    assert (await run_check(dead, "BACKUP", tmp_path))[0] == 1
    # ... and one cut off from etcd fails (it cannot fail over: the other should serve).
    code, out = await run_check(admin_api + "/cut", "MASTER", tmp_path)
    assert code == 1 and "cannot reach etcd" in out
    # Single mode: a BACKUP does not run the router: its absence is not a failure there.
    assert (await run_check(dead, "BACKUP", tmp_path, mode="single"))[0] == 0
    assert (await run_check(dead, "MASTER", tmp_path, mode="single"))[0] == 1
    # Without the variable, the mode comes from the deployment file.
    assert (await run_check(dead, "BACKUP", tmp_path, mode="", config="district.yaml"))[0] == 0
    assert (await run_check(dead, "BACKUP", tmp_path, mode="", config="pair-r1.yaml"))[0] == 1
    # Something else answering on the admin port (not /v1/status JSON) is a failure.
    code, _ = await run_check(admin_api + "/nope-", "MASTER", tmp_path)
    assert code == 1


def keepalived_test(conf: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    tool = need("keepalived")
    path = tmp_path / "keepalived.conf"
    path.write_text(conf)
    # setsid: keepalived signals its own process group when it exits.
    return run(["setsid", tool, "--config-test", "-f", str(path)])


def test_keepalived_config_test_passes(tmp_path: Path) -> None:
    conf = (DEPLOY / "keepalived" / "keepalived.conf").read_text()
    # Scripts from this checkout; no `user hotspare` line: that user does not exist here
    # (keepalived -t refuses an unknown user, and kills itself on a known non-root one).
    conf = conf.replace("/usr/local/lib/hotspare/", f"{DEPLOY / 'keepalived'}/")
    assert "    user hotspare\n" in conf
    conf = conf.replace("    user hotspare\n", "")
    # The example's eth0 may be called otherwise here (keepalived checks it exists).
    nics = sorted(n for _, n in socket.if_nameindex() if n != "lo" and Path(f"/sys/class/net/{n}/device").exists())
    nics = nics or sorted(n for _, n in socket.if_nameindex() if n != "lo")
    if not nics:
        pytest.skip("no network interface besides lo for keepalived to check against")
    conf = conf.replace("interface eth0", f"interface {nics[0]}").replace("dev eth0 label eth0:", f"dev {nics[0]} label {nics[0]}:")
    result = keepalived_test(conf, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Negative control: the same check catches a bad value.
    bad = keepalived_test(conf.replace("auth_type PASS", "auth_type PASSS"), tmp_path)
    assert bad.returncode != 0 and "unknown authentication type" in bad.stderr


def test_keepalived_scripts_parse() -> None:
    for script in ("check-hotspare.sh", "notify-hotspare.sh"):
        path = DEPLOY / "keepalived" / script
        assert os.access(path, os.X_OK), f"{script} is not executable"
        result = run(["/bin/sh", "-n", str(path)])
        assert result.returncode == 0, result.stderr
    conf = (DEPLOY / "keepalived" / "keepalived.conf").read_text()
    assert "check-hotspare.sh" in conf and "notify-hotspare.sh" in conf
    assert conf.count("{") == conf.count("}")


# -- etcd -------------------------------------------------------------------------------

ETCD_MEMBERS = {"r1": "10.20.0.8", "r2": "10.20.0.9", "w": "10.20.0.7"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loopback_etcd_config(name: str, ports: dict[str, tuple[int, int]], data: Path) -> dict[str, Any]:
    """The shipped member file with its addresses moved to loopback ports and TLS left out
    (the test has no certificates): everything else is run exactly as shipped."""
    text = (DEPLOY / "etcd" / f"etcd-{name}.conf.yml").read_text()
    text = text.replace(",https://127.0.0.1:2379", "")
    for member, ip in ETCD_MEMBERS.items():
        client, peer = ports[member]
        text = text.replace(f"https://{ip}:2379", f"http://127.0.0.1:{client}")
        text = text.replace(f"https://{ip}:2380", f"http://127.0.0.1:{peer}")
    conf: dict[str, Any] = yaml.safe_load(text)
    assert conf.pop("client-transport-security")["trusted-ca-file"]
    assert conf.pop("peer-transport-security")["client-cert-auth"] is True
    assert "10.20.0." not in json.dumps(conf) and "https" not in json.dumps(conf)  # every address moved
    conf["data-dir"] = str(data / name)
    conf["log-outputs"] = ["stderr"]
    return conf


def test_the_etcd_members_form_a_cluster_as_shipped(tmp_path: Path) -> None:
    etcd, etcdctl = need("etcd"), need("etcdctl")
    ports = {m: (free_port(), free_port()) for m in ETCD_MEMBERS}
    procs = []
    try:
        for name in ETCD_MEMBERS:
            conf = loopback_etcd_config(name, ports, tmp_path)
            assert conf["name"] == f"etcd-{name}"
            path = tmp_path / f"{name}.yml"
            path.write_text(yaml.safe_dump(conf))
            with (tmp_path / f"{name}.log").open("w") as log:
                procs.append(subprocess.Popen([etcd, "--config-file", str(path)], stdout=subprocess.DEVNULL,
                                              stderr=log))
        endpoints = ",".join(f"http://127.0.0.1:{c}" for c, _ in ports.values())
        deadline = time.monotonic() + 30
        while True:
            result = run([etcdctl, "--endpoints", endpoints, "endpoint", "health"], env={"ETCDCTL_API": "3"})
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)  # polling a subprocess's health with a deadline
        logs = "".join((tmp_path / f"{n}.log").read_text()[-2000:] for n in ETCD_MEMBERS)
        assert result.returncode == 0, result.stdout + result.stderr + logs
        members = run([etcdctl, "--endpoints", endpoints, "member", "list"], env={"ETCDCTL_API": "3"})
        assert sorted(line.split(", ")[2] for line in members.stdout.splitlines()) == ["etcd-r1", "etcd-r2", "etcd-w"]
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_etcd_unit_verifies() -> None:
    tool = need("systemd-analyze")
    result = run([tool, "verify", str(DEPLOY / "etcd" / "etcd.service")])
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


@pytest.mark.parametrize(("mode", "state", "calls"), [
    ("pair", "MASTER", ""), ("pair", "BACKUP", ""),  # a pair: the router runs on both, always
    ("single", "BACKUP", "stop hotspare-router.service\n"),
])
def test_keepalived_notify_moves_only_the_address_in_a_pair(mode: str, state: str, calls: str, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls"}\n')
    (bin_dir / "systemctl").chmod(0o755)
    mark = tmp_path / "mark"
    # The mode as the scripts find it: from the deployment file (a cluster: section or not).
    config = DEPLOY / "examples" / ("pair-r1.yaml" if mode == "pair" else "district.yaml")
    result = run(["/bin/sh", str(DEPLOY / "keepalived" / "notify-hotspare.sh"), "INSTANCE", "hotspare_vip", state, "150"],
                 env={"PATH": f"{bin_dir}:/usr/bin:/bin", "HOTSPARE_KEEPALIVED_STATE": str(mark),
                      "HOTSPARE_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert mark.read_text() == state + "\n"
    assert ((tmp_path / "calls").read_text() if (tmp_path / "calls").exists() else "") == calls
