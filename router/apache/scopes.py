"""Walk an httpd directive tree into scopes (main server, virtual hosts), balancers and
listeners, reporting each directive that has no place in hotspare. Pure; no I/O.

Rules:

1. Each directive is either recorded on its scope or reported with a reason, once.
2. Virtual hosts inherit the main server's proxy settings (httpd merges them the same
   way); ``<IfModule>`` bodies count as active (the config was written for a server
   that had the module), negated ones as inactive and reported.
3. Relative paths (certificates, logs) are made absolute against ``ServerRoot``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from .parser import Directive
from .workers import Balancer, Untranslated, Worker, apache_seconds, parse_params

__all__ = ["Pass", "Scope", "walk"]


@dataclass(frozen=True)
class Pass:
    path: str
    target: str
    params: tuple[str, ...]
    directive: Directive


@dataclass
class _Reverse:
    path: str
    url: str
    directive: Directive
    used: bool = False


@dataclass
class Scope:
    label: str
    parent: Scope | None = None
    addresses: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    passes: list[Pass] = field(default_factory=list)
    reverses: list[_Reverse] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    own_cookie_domain: dict[str, str] = field(default_factory=dict)
    own_cookie_path: dict[str, str] = field(default_factory=dict)
    cert: tuple[Directive, Directive | None] | None = None
    cert_line: Directive | None = None
    key_line: Directive | None = None
    redirect: tuple[Directive, int | None] | None = None
    log: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        if key in self.settings:
            return self.settings[key]
        return self.parent.get(key, default) if self.parent else default

    @property
    def cookie_domain(self) -> dict[str, str]:
        base = self.parent.cookie_domain if self.parent else {}
        return {**base, **self.own_cookie_domain}

    @property
    def cookie_path(self) -> dict[str, str]:
        base = self.parent.cookie_path if self.parent else {}
        return {**base, **self.own_cookie_path}

    def reverse_matches(self, p: Pass, workers: list[Worker]) -> bool:
        """Is there a ProxyPassReverse for this ProxyPass (here or in the main server)?"""
        origins = {w.origin.rstrip("/") for w in workers}
        hit = False
        scope: Scope | None = self
        while scope is not None:
            for r in scope.reverses:
                same_path = r.path.rstrip("/") == p.path.rstrip("/")
                u = urlsplit(r.url)
                scheme = {"ws": "http", "wss": "https"}.get(u.scheme, u.scheme)
                same_target = r.url.rstrip("/") == p.target.rstrip("/") or f"{scheme}://{u.netloc}" in origins
                if same_path and same_target:
                    r.used = hit = True
            scope = scope.parent
        return hit


# Directive -> why it has no equivalent (anything else gets the generic reason).
_PROCESS = "process management: hotspare is one process run by systemd (see deploy/systemd)"
_FILES = "hotspare serves no files of its own; it only proxies"
_REASONS = {
    "loadmodule": "hotspare has proxying, TLS, WebSocket and health checks built in",
    **dict.fromkeys(
        ["user", "group", "pidfile", "mutex", "defaultruntimedir", "serverlimit", "startservers",
         "maxrequestworkers", "minsparethreads", "maxsparethreads", "threadsperchild",
         "maxconnectionsperchild", "threadlimit", "minspareservers", "maxspareservers"], _PROCESS),
    **dict.fromkeys(["keepalive", "keepalivetimeout", "maxkeepaliverequests"],
                    "client keep-alive is always on, with hotspare's own limits"),
    **dict.fromkeys(
        ["documentroot", "directoryindex", "alias", "scriptalias", "options", "allowoverride",
         "accessfilename", "addtype", "addhandler", "typesconfig", "errordocument",
         "adddefaultcharset"], _FILES),
    **dict.fromkeys(["require", "order", "allow", "deny", "satisfy", "authtype", "authname",
                     "authuserfile"], "access control is not translated; hotspare forwards every request"),
    **dict.fromkeys(["header", "requestheader"], "header editing (mod_headers) is not supported"),
    **dict.fromkeys(["rewriteengine", "rewriterule", "rewritecond", "rewritemap"],
                    "mod_rewrite rules are not translated; a [P] rule needs a service per route"),
    "proxypassmatch": "regular-expression routes are not supported; hotspare routes by host and path prefix",
    "proxypassreversematch": "regular-expression routes are not supported; hotspare routes by host and path prefix",
    **dict.fromkeys(["sslprotocol", "sslciphersuite", "sslhonorcipherorder", "sslcompression",
                     "sslsessiontickets", "sslusestapling", "sslstaplingcache", "sslsessioncache",
                     "sslsessioncachetimeout", "sslrandomseed", "sslpassphrasedialog"],
                    "TLS versions, ciphers and caches are Python's ssl defaults (TLS 1.2 or newer)"),
    "sslcertificatechainfile": "append the chain to the certificate file (cert: takes a full chain)",
    "proxyerroroverride": "backend error pages are always passed through unchanged",
    "proxybadheader": "a backend's malformed header always makes the response a 502",
    "proxyiobuffersize": "buffer sizes are managed by hotspare",
    "proxyreceivebuffersize": "buffer sizes are managed by hotspare",
    "proxymaxforwards": "Max-Forwards is passed through unchanged",
    "proxystatus": "see hotspare's status page and /metrics on the admin listener",
    "proxyhcexpr": "health expressions are not translated; set health.expect_status / expect_body by hand",
    "proxyhctemplate": "health-check templates are not translated; set health.* by hand",
    "proxyhctpsize": "health checks run in the router's event loop; there is no thread pool",
    "proxyset": "not a balancer or worker this config defines",
}
_GENERIC = "no equivalent in hotspare, which only proxies"
_CONSUMED = {"serverroot", "define", "sslproxyengine", "sslengine"}
_LEVELS = {"debug": "debug", "info": "info", "notice": "info", "warn": "warning", "error": "error",
           "crit": "error", "alert": "error", "emerg": "error"}


@dataclass
class _Walk:
    notes: list[Untranslated]
    server_root: str | None
    main: Scope = field(default_factory=lambda: Scope("default"))
    vhosts: list[Scope] = field(default_factory=list)
    balancers: dict[str, Balancer] = field(default_factory=dict)
    listens: list[Directive] = field(default_factory=list)
    defines: set[str] = field(default_factory=set)
    worker_sets: list[tuple[str, dict[str, str], Directive]] = field(default_factory=list)

    def note(self, d: Directive, reason: str) -> None:
        self.notes.append(Untranslated.of(d, reason))

    def path(self, value: str) -> str:
        p = PurePosixPath(value)
        if p.is_absolute() or self.server_root is None:
            return value
        return str(PurePosixPath(self.server_root) / p)

    def balancer(self, url: str) -> Balancer:
        name = urlsplit(url).netloc.lower()
        return self.balancers.setdefault(name, Balancer(name))

    # -- sections ----------------------------------------------------------------------

    def section(self, d: Directive, scope: Scope) -> None:
        children = d.children or ()
        key, arg = d.key, (d.args[0] if d.args else "")
        if key == "virtualhost" and scope is self.main:
            vh = Scope(f"vhost-{d.line}", parent=self.main, addresses=list(d.args))
            self.body(children, vh)
            if vh.cert_line is not None:
                vh.cert = (vh.cert_line, vh.key_line)
            elif vh.key_line is not None:
                self.note(vh.key_line, "a key without SSLCertificateFile")
            self.vhosts.append(vh)
        elif key == "proxy" and arg.lower().startswith("balancer://"):
            bal = self.balancer(arg)
            for c in children:
                if c.key == "balancermember" and c.args:
                    bal.members.append(Worker(c.args[0], parse_params(c.args[1:]), c))
                elif c.key == "proxyset":
                    for k, v in parse_params(c.args).items():
                        bal.settings[k] = (v, c)
                else:
                    self.note(c, f"inside <Proxy {arg}>: {_REASONS.get(c.key, _GENERIC)}")
        elif key == "proxy" and re.match(r"^(https?|wss?)://", arg, re.IGNORECASE) and all(
                c.key == "proxyset" for c in children):
            for c in children:
                self.worker_sets.append((arg, parse_params(c.args), c))
        elif key == "location" and any(c.key in ("proxypass", "proxypassreverse") for c in children):
            for c in children:
                if c.key == "proxypass" and c.args and c.args[0] != "!":
                    scope.passes.append(Pass(arg, c.args[0], c.args[1:], c))
                elif c.key == "proxypassreverse" and c.args:
                    scope.reverses.append(_Reverse(arg, c.args[0], c))
                else:
                    self.note(c, f"inside <Location {arg}>: {_REASONS.get(c.key, _GENERIC)}")
        elif key == "ifmodule" and not arg.startswith("!"):
            self.body(children, scope)
        elif key == "ifdefine" and (arg.lstrip("!") in self.defines) != arg.startswith("!"):
            self.body(children, scope)
        elif key == "ifversion":
            self.body(children, scope)
        elif key in ("ifmodule", "ifdefine"):
            self.note(d, f"inactive block ({len(children)} directives): assumed false for this server")
        elif key == "proxy":
            self.note(d, f"access control for proxied requests ({len(children)} directives) is not translated")
        else:
            self.note(d, f"<{d.name}> sections ({len(children)} directives) are not translated: {_FILES}")

    # -- directives --------------------------------------------------------------------

    def body(self, directives: tuple[Directive, ...], scope: Scope) -> None:
        for d in directives:
            if d.children is not None:
                self.section(d, scope)
            else:
                self.directive(d, scope)

    def directive(self, d: Directive, scope: Scope) -> None:
        key, args = d.key, d.args
        value = args[0] if args else ""
        in_vhost = scope is not self.main
        if key == "define" and args:
            self.defines.add(value)
        if key == "serverroot" and args:
            self.server_root = value
        if key in _CONSUMED:
            return
        if key == "listen" and args and not in_vhost:
            self.listens.append(d)
        elif key == "servername" and args and in_vhost:
            host = urlsplit(value if "://" in value else "//" + value).hostname or value
            scope.hosts.insert(0, host)
            scope.label = host
        elif key == "servername" and args:
            pass  # the main server's name: its ProxyPass routes answer any host
        elif key == "serveralias" and in_vhost:
            for alias in args:
                if "*" in alias or "?" in alias:
                    self.notes.append(Untranslated.of(
                        d, "wildcard names are not supported; hotspare matches Host exactly", f"ServerAlias {alias}"))
                else:
                    scope.hosts.append(alias)
        elif key == "proxypass" and len(args) >= 2 and args[0].startswith("/"):
            if args[1] == "!":
                self.note(d, "exclusions are not supported: a hotspare service proxies its whole path prefix")
            else:
                scope.passes.append(Pass(args[0], args[1], args[2:], d))
        elif key == "proxypassreverse" and len(args) >= 2:
            scope.reverses.append(_Reverse(args[0], args[1], d))
        elif key in ("proxypassreversecookiedomain", "proxypassreversecookiepath") and len(args) >= 2:
            target = scope.own_cookie_domain if key.endswith("domain") else scope.own_cookie_path
            target[args[0]] = args[1]
            if len(args) > 2:
                self.note(d, "the 'interpolate' flag is not supported")
        elif key in ("proxytimeout", "timeout") and args:
            seconds = apache_seconds(value)
            if seconds is None:
                self.note(d, f"cannot read the duration {value!r}")
            else:
                scope.settings[key] = f"{seconds:g}s"
        elif key in ("proxypreservehost", "proxyaddheaders", "proxyrequests", "proxyvia", "sslproxyverify") and args:
            v = value.lower()
            scope.settings[key] = v
            if key == "proxyaddheaders" and v == "off":
                self.note(d, "hotspare always adds X-Forwarded-For, X-Forwarded-Host and X-Forwarded-Proto")
            elif key == "proxyrequests" and v == "on":
                self.note(d, "forward proxying is not supported; hotspare is a reverse proxy only")
            elif key == "proxyvia" and v != "on":
                self.note(d, "hotspare always adds 'Via: 1.1 hotspare' to requests and responses")
            elif key == "sslproxyverify" and v not in ("none", "require"):
                self.note(d, "only 'none' (verify_tls: false) and 'require' are translated")
        elif key == "sslproxycacertificatefile" and args:
            scope.settings[key] = self.path(value)
        elif key == "sslcertificatefile" and args and in_vhost:
            scope.cert_line = Directive(d.name, (self.path(value),), d.file, d.line)
        elif key == "sslcertificatekeyfile" and args and in_vhost:
            scope.key_line = Directive(d.name, (self.path(value),), d.file, d.line)
        elif key == "redirect" and in_vhost and self._https_redirect(d, scope):
            pass
        elif key in ("errorlog", "customlog", "loglevel") and not in_vhost:
            self._log(d, scope)
        elif key in ("errorlog", "customlog", "loglevel"):
            self.note(d, "hotspare keeps one access log and one error log for all services")
        elif key == "balancermember" and args and value.lower().startswith("balancer://") and len(args) >= 2:
            self.balancer(value).members.append(Worker(args[1], parse_params(args[2:]), d))
        elif key == "proxyset" and args and value.lower().startswith("balancer://"):
            for k, v in parse_params(args[1:]).items():
                self.balancer(value).settings[k] = (v, d)
        elif key == "proxyset" and args and "://" in value:
            self.worker_sets.append((value, parse_params(args[1:]), d))
        else:
            self.note(d, _REASONS.get(key, _GENERIC))

    def _https_redirect(self, d: Directive, scope: Scope) -> bool:
        words = list(d.args)
        if words and not words[0].startswith("/"):
            status = words.pop(0).lower()
            if status not in ("permanent", "301", "308", "temp", "302", "307", "seeother", "303"):
                return False
        if len(words) != 2 or words[0] != "/" or not words[1].lower().startswith("https://"):
            return False
        scope.redirect = (d, urlsplit(words[1]).port)
        return True

    def _log(self, d: Directive, scope: Scope) -> None:
        value = d.args[0] if d.args else ""
        if d.key == "loglevel":
            level = _LEVELS.get(value.split(":")[-1].lower(), "debug" if "trace" in value.lower() else "")
            if level and len(d.args) == 1:
                scope.log["level"] = level
            else:
                self.note(d, "per-module log levels are not supported")
        elif value.startswith("|") or value.startswith("syslog"):
            self.note(d, "hotspare writes logs to a file or standard output/error, not to a pipe or syslog")
        elif "${" in value:
            self.note(d, f"{value!r} uses a variable that was never defined")
        elif d.key == "errorlog":
            scope.log["error_log"] = self.path(value)
        elif len(d.args) >= 2 and d.args[1].lower() == "combined" and len(d.args) == 2:
            scope.log["access_log"] = self.path(value)
            scope.log["access_format"] = "combined"
        else:
            self.note(d, "hotspare writes the access log in the 'combined' format (or JSON), not this one")


def walk(
    top: tuple[Directive, ...], notes: list[Untranslated], server_root: str | None
) -> tuple[Scope, list[Scope], dict[str, Balancer], list[Directive]]:
    """Sort ``top`` into (main server, virtual hosts, balancers by name, Listen lines)."""
    w = _Walk(notes, server_root)
    w.body(top, w.main)
    # ProxySet on a worker URL: its parameters join every member/target under that URL
    # (httpd finds a worker by the longest URL prefix).
    for url, params, d in w.worker_sets:
        origin = url.rstrip("/").lower()
        matched = False
        for bal in w.balancers.values():
            for m in bal.members:
                if m.url.lower().startswith(origin):
                    m.params.update(params)
                    matched = True
        for scope in [w.main, *w.vhosts]:
            for i, p in enumerate(scope.passes):
                if p.target.lower().startswith(origin):
                    extra = tuple(f"{k}={v}" for k, v in params.items())
                    scope.passes[i] = Pass(p.path, p.target, p.params + extra, p.directive)
                    matched = True
        if not matched:
            w.note(d, "no BalancerMember or ProxyPass uses that URL")
    return w.main, w.vhosts, w.balancers, w.listens
