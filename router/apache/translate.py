"""Apache directives -> hotspare's deployment tree, and what could not be translated.

Rules:

1. :func:`translate` is pure: a directive tree in, a :class:`Translation` out (a plain
   dict ready for ``parse_config`` and YAML, plus every untranslated directive with its
   file, line and reason). It reads no files and looks at no clock.
2. Every directive ends in exactly one place: a config key, or the untranslated list.
   A section that cannot be translated is reported once, for its whole body.
3. One ``ProxyPass`` is one hotspare service (routed by the virtual host's names and the
   path). A ``balancer://`` target's members become its backends, normal members first
   and ``status=+H`` hot standbys after them: the first is the active.
4. Where Apache's default differs from hotspare's and Apache's is what the application
   saw (``ProxyPreserveHost Off``), the translation writes the key explicitly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .parser import Directive
from .scopes import Pass, Scope, walk
from .workers import Untranslated, Worker, parse_params, worker_keys

__all__ = ["Translation", "Untranslated", "translate"]


@dataclass(frozen=True)
class Translation:
    config: dict[str, Any]
    untranslated: tuple[Untranslated, ...]


_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def _name(raw: str, taken: set[str]) -> str:
    base = _NAME_BAD.sub("-", raw).strip("-._") or "app"
    base = base[:56]
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def _hostport(address: str) -> tuple[str, str] | None:
    """httpd ``Listen`` argument -> (host, port): ``80``, ``1.2.3.4:80``, ``[::]:443``."""
    m = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+)):(\d+)|(\d+)", address)
    if not m:
        return None
    if m.group(4):
        return "0.0.0.0", m.group(4)
    return (m.group(1) or m.group(2)), m.group(3)


def _port_of(url: str) -> str | None:
    """The port of a backend URL (its scheme's default when absent); None when invalid."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    return str(port) if port else ("443" if parts.scheme in ("https", "wss") else "80")


def _bad_port(url: str) -> str:
    undefined = re.findall(r"\$\{[^}]*\}", url)
    if undefined:
        return (f"backend URL {url} has no valid port: {', '.join(undefined)} is not defined here "
                "(a Define in a file that includes this one? point import-apache at that file)")
    return f"backend URL {url} has no valid port"


def _vhost_ports(addresses: list[str]) -> set[str]:
    ports: set[str] = set()
    for a in addresses:
        m = re.search(r":(\d+|\*)$", a)
        ports.add(m.group(1) if m else "*")
    return ports


@dataclass
class _Built:
    service: dict[str, Any]
    directive: Directive
    workers: list[Worker] = field(default_factory=list)


class _Translator:
    def __init__(self, top: tuple[Directive, ...], server_root: str | None) -> None:
        self.notes: list[Untranslated] = []
        self.main, self.vhosts, self.balancers, self.listens = walk(top, self.notes, server_root)

    # -- services ----------------------------------------------------------------------

    def _workers_for(self, p: Pass) -> tuple[list[Worker], dict[str, tuple[str, Directive]]] | None:
        parts = urlsplit(p.target)
        scheme = parts.scheme.lower()
        if scheme == "balancer":
            bal = self.balancers.get(parts.netloc.lower())
            if bal is None or not bal.members:
                self.notes.append(Untranslated.of(
                    p.directive, f"balancer://{parts.netloc} has no <Proxy balancer://{parts.netloc}> "
                    "with BalancerMember lines; there is no backend to send to"))
                return None
            settings = dict(bal.settings)
            for k, v in parse_params(p.params).items():
                settings[k] = (v, p.directive)
            members = [Worker(m.url.rstrip("/") + parts.path if parts.path not in ("", "/") else m.url,
                              m.params, m.directive) for m in bal.members]
            ordered = [m for m in members if not m.spare] + [m for m in members if m.spare]
            return ordered, settings
        if scheme in ("http", "https", "ws", "wss"):
            return [Worker(p.target, parse_params(p.params), p.directive)], {}
        self.notes.append(Untranslated.of(
            p.directive, f"{scheme}:// backends are not supported; hotspare speaks HTTP/1.1 (and WebSocket) to backends"))
        return None

    def _balancer_settings(self, settings: dict[str, tuple[str, Directive]], active: list[Worker],
                           lb_name: str) -> dict[str, Any]:
        failover: dict[str, Any] = {}
        for key, (value, d) in settings.items():
            label = f"{d.name} ... {key}={value}"
            if key == "failonstatus":
                codes = [c.strip() for c in value.split(",") if c.strip()]
                if codes and all(c.isdigit() and 100 <= int(c) <= 599 for c in codes):
                    failover["fail_on_status"] = [int(c) for c in codes]
                else:
                    self.notes.append(Untranslated.of(d, f"cannot read status codes {value!r}", label))
            elif key == "failontimeout":
                if value.lower() == "off":
                    self.notes.append(Untranslated.of(
                        d, "hotspare always counts a backend timeout as a traffic failure", label))
            elif key == "lbmethod":
                pass  # reported per extra active member below; one active needs no method
            else:
                reason = {
                    "stickysession": "sticky sessions do not apply: all traffic goes to the one active backend",
                    "nofailover": "hotspare always fails over (failover.automatic: false turns it off entirely)",
                    "maxattempts": "hotspare replays a failed request once, on the new active, under failover.safe_methods",
                    "timeout": "a request never waits for a free balancer member; it is held only while PROMOTING (failover.hold)",
                    "growth": "members cannot be added at run time; edit the file and reload (SIGHUP)",
                    "forcerecovery": "hotspare never forces a failed backend back; it returns when its probes pass",
                }.get(key, "not a balancer setting hotspare knows how to translate")
                self.notes.append(Untranslated.of(d, reason, label))
        for extra in active[1:]:
            self.notes.append(Untranslated.of(
                extra.directive,
                f"a second active member of balancer://{lb_name}: hotspare sends all traffic to one "
                "backend at a time, so this one becomes a spare (Apache balanced across them)"))
        return failover

    def _service(self, scope: Scope, p: Pass, taken: set[str]) -> _Built | None:
        found = self._workers_for(p)
        if found is None:
            return None
        workers, settings = found
        parts = urlsplit(p.target)
        active = [w for w in workers if not w.spare]
        failover = self._balancer_settings(settings, active, parts.netloc) if parts.scheme == "balancer" else {}
        keys = worker_keys(workers, self.notes)

        local = p.path
        # hotspare forwards the request path unchanged, after the backend URL's own path
        # (routes.py: base = origin + url path). httpd replaces the matched prefix with the
        # target's path. Both agree when the paths are equal, or when the prefix is "/".
        moved = [w for w in workers if w.path.rstrip("/") != local.rstrip("/")]
        if moved and local.rstrip("/"):
            self.notes.append(Untranslated.of(
                p.directive, f"maps {local} to the different backend path {moved[0].path or '/'}; hotspare "
                "forwards the path unchanged (it cannot strip or replace a prefix)"))
            return None
        bad = next((w for w in workers if _port_of(w.url) is None), None)
        if bad is not None:
            self.notes.append(Untranslated.of(p.directive, _bad_port(bad.url)))
            return None
        backends: list[dict[str, Any]] = []
        names: set[str] = set()
        for w in workers:
            wp = urlsplit(w.url)
            raw = w.params.get("route") or f"{wp.hostname}-{_port_of(w.url)}"
            # Same paths: the URL carries no path. Prefix "/": the target's path is prepended.
            same = w.path.rstrip("/") == local.rstrip("/")
            url = w.origin if same else w.origin + w.path
            b: dict[str, Any] = {"name": _name(raw, names), "url": url}
            if wp.scheme in ("https", "wss") and scope.get("sslproxyverify", "none").lower() == "none":
                b["verify_tls"] = False
            ca = scope.get("sslproxycacertificatefile")
            if wp.scheme in ("https", "wss") and ca:
                b["ca_file"] = ca
            backends.append(b)

        timeouts = dict(keys.timeouts)
        proxy_timeout = scope.get("proxytimeout") or scope.get("timeout")
        if proxy_timeout:
            timeouts.setdefault("first_byte", proxy_timeout)
            timeouts.setdefault("idle", proxy_timeout)

        health: dict[str, Any] = dict(keys.health)
        if "method" not in health and "path" not in health:
            # No mod_proxy_hcheck: Apache judged a worker by its traffic alone. The
            # nearest probe asks whether the backend answers HTTP at all.
            health.setdefault("path", workers[0].path or "/")
            health["expect_status"] = ["2xx", "3xx", "4xx"]

        reverse = scope.reverse_matches(p, workers)
        service: dict[str, Any] = {
            "name": _name(f"{scope.label}-{local.strip('/')}".rstrip("-"), taken),
            "hosts": list(scope.hosts),
            "path_prefix": local,
            "backends": backends,
            "preserve_host": (scope.get("proxypreservehost") or "off").lower() == "on",
            "health": health,
            "rewrite": {
                "location": reverse,
                "cookie_domain": dict(scope.cookie_domain),
                "cookie_path": dict(scope.cookie_path),
            },
        }
        if timeouts:
            service["timeouts"] = timeouts
        if keys.pool:
            service["pool"] = dict(keys.pool)
        if failover:
            service["failover"] = failover
        return _Built(service, p.directive, workers)

    # -- listeners ---------------------------------------------------------------------

    def _listeners(self) -> list[dict[str, Any]]:
        listeners: list[dict[str, Any]] = []
        for d in self.listens:
            hp = _hostport(d.args[0]) if d.args else None
            if hp is None:
                self.notes.append(Untranslated.of(d, "expected Listen [address:]port"))
                continue
            host, port = hp
            listeners.append({"address": f"[{host}]:{port}" if ":" in host else f"{host}:{port}"})
        by_port = {ln["address"].rsplit(":", 1)[1]: ln for ln in listeners}
        cert_from: dict[str, Directive] = {}
        for vh in self.vhosts:
            ports = _vhost_ports(vh.addresses)
            targets = [ln for p, ln in by_port.items() if p in ports or "*" in ports]
            if vh.cert is not None:
                cert, key = vh.cert
                for ln in targets:
                    port = ln["address"].rsplit(":", 1)[1]
                    if "cert" in ln and ln["cert"] != cert.args[0]:
                        self.notes.append(Untranslated.of(
                            cert, f"listener {ln['address']} already serves the certificate from "
                            f"{cert_from[port].where}; hotspare has one certificate per listener (no SNI selection)"))
                        continue
                    ln["cert"], ln["key"] = cert.args[0], (key or cert).args[0]
                    cert_from[port] = cert
            if vh.redirect is not None:
                d, https_port = vh.redirect
                for ln in targets:
                    if "cert" in ln:
                        self.notes.append(Untranslated.of(d, f"listener {ln['address']} is HTTPS; it cannot also redirect to HTTPS"))
                        continue
                    ln["redirect_to_https"] = True
                    if https_port and https_port != 443:
                        ln["https_port"] = https_port
        return listeners

    def run(self) -> Translation:
        listeners = self._listeners()
        taken: set[str] = set()
        built: dict[tuple[tuple[str, ...], str], _Built] = {}
        services: list[dict[str, Any]] = []
        for scope in [self.main, *self.vhosts]:
            for p in scope.passes:
                noted = len(self.notes)
                b = self._service(scope, p, taken)
                if b is None:
                    continue
                route = (tuple(sorted(h.lower() for h in b.service["hosts"])), b.service["path_prefix"])
                earlier = built.get(route)
                if earlier is not None:
                    taken.discard(b.service["name"])
                    same = {k: v for k, v in b.service.items() if k != "name"} == {
                        k: v for k, v in earlier.service.items() if k != "name"}
                    if same:
                        del self.notes[noted:]  # already reported for the earlier copy
                    else:
                        self.notes.append(Untranslated.of(
                            p.directive, f"hotspare routes by host and path, not by port; the same route is "
                            f"already the service {earlier.service['name']!r} from {earlier.directive.where} "
                            "with different settings"))
                    continue  # an identical route on another port: every listener serves it
                built[route] = b
                services.append(b.service)
        for scope in [self.main, *self.vhosts]:
            for r in scope.reverses:
                if not r.used:
                    self.notes.append(Untranslated.of(
                        r.directive, "no ProxyPass with this path and backend; hotspare rewrites "
                        "Location only for URLs of the service's own backends"))
        config: dict[str, Any] = {"listen": listeners}
        if self.main.log:
            config["log"] = dict(self.main.log)
        config["services"] = services
        notes = sorted(self.notes, key=lambda n: (n.file, n.line, n.directive))
        return Translation(config, tuple(notes))


def translate(directives: tuple[Directive, ...], server_root: str | None = None) -> Translation:
    """Translate a loaded httpd config (see :func:`.parser.load_apache_config`).

    ``server_root`` makes relative certificate and log paths absolute until a
    ``ServerRoot`` directive says otherwise.
    """
    return _Translator(directives, server_root).run()
