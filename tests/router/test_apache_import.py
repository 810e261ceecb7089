"""import-apache: real-world-shaped httpd configs in tests/router/data/apache, translated,
checked through the one config loader, and compared with the exact list of directives
that could not be translated (file, line, directive)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from router.apache import ApacheConfigError, load_apache_config, parse_text, translate
from router.cli.import_apache import import_apache, run
from router.config import Config, load_config, parse_config

DATA = Path(__file__).parent / "data" / "apache"


def imported(name: str) -> tuple[Config, list[tuple[str, int, str]]]:
    t = import_apache(DATA / name)
    config = parse_config(t.config, base_dir=DATA, env={})
    notes = [(str(Path(u.file).relative_to(DATA)), u.line, u.directive) for u in t.untranslated]
    for u in t.untranslated:
        assert u.reason, u  # every entry says why
    return config, notes


def test_plain_proxypass_pair() -> None:
    config, notes = imported("plain/httpd.conf")
    assert [ln.address for ln in config.listen] == ["0.0.0.0:80"]
    (svc,) = config.services
    assert (svc.hosts, svc.path_prefix, svc.preserve_host) == ([], "/", True)
    assert [(b.name, b.url) for b in svc.backends] == [("10.0.0.11-8080", "http://10.0.0.11:8080")]
    # The worker's timeout= wins over ProxyTimeout, as in httpd.
    assert (svc.timeouts.connect, svc.timeouts.first_byte, svc.timeouts.idle) == (5.0, 120.0, 120.0)
    assert svc.rewrite.location is True
    # No mod_proxy_hcheck: the probe only asks whether the backend answers HTTP.
    assert svc.health.path == "/" and 404 in svc.health.expect_status and 502 not in svc.health.expect_status
    assert config.log.access_log == str(DATA / "plain" / "logs" / "access.log")
    assert config.log.error_log == str(DATA / "plain" / "logs" / "error.log")
    assert notes == [
        ("plain/httpd.conf", 4, "LoadModule proxy_module modules/mod_proxy.so"),
        ("plain/httpd.conf", 5, "LoadModule proxy_http_module modules/mod_proxy_http.so"),
        ("plain/httpd.conf", 6, "User www-data"),
    ]


def test_balancer_with_hot_standby_and_health_checks() -> None:
    config, notes = imported("balancer/httpd.conf")
    assert [ln.address for ln in config.listen] == ["0.0.0.0:8080", "[::1]:8080"]
    (svc,) = config.services
    assert svc.path_prefix == "/library/"
    # status=+H is the spare: listed after the active.
    assert [(b.name, b.url) for b in svc.backends] == [
        ("a", "http://app-a.internal:8001"),
        ("b", "http://app-b.internal:8001"),
    ]
    h = svc.health
    assert (h.method, h.path, h.interval, h.rise, h.fall) == ("GET", "/health", 5.0, 2, 3)
    assert svc.failover.fail_on_status == frozenset({502, 503})
    assert (svc.timeouts.connect, svc.timeouts.first_byte) == (2.0, 30.0)
    assert svc.preserve_host is False  # httpd's default, written out explicitly
    assert svc.rewrite.location is True
    assert notes == [
        ("balancer/httpd.conf", 5, "ProxyHCExpr ok234 {%{REQUEST_STATUS} =~ /^[234]/}"),
        ("balancer/httpd.conf", 9, "BalancerMember http://app-a.internal:8001/library/ retry=0"),
        ("balancer/httpd.conf", 11, "BalancerMember http://app-b.internal:8001/library/ loadfactor=10"),
        ("balancer/httpd.conf", 11, "BalancerMember http://app-b.internal:8001/library/ retry=0"),
        ("balancer/httpd.conf", 11, "BalancerMember http://app-b.internal:8001/library/ timeout=60"),
        ("balancer/httpd.conf", 11, "BalancerMember http://app-b.internal:8001/library/ timeout=60"),
        ("balancer/httpd.conf", 13, "ProxySet ... stickysession=JSESSIONID"),
        ("balancer/httpd.conf", 18, "ProxyPass /static/ !"),
        ("balancer/httpd.conf", 19, "RewriteEngine On"),
    ]


def test_tls_virtual_host_with_http_redirect() -> None:
    config, notes = imported("tls/httpd.conf")
    plain, tls = config.listen
    assert (plain.address, plain.redirect_to_https, plain.tls) == ("0.0.0.0:80", True, False)
    assert (tls.address, tls.cert, tls.key) == (
        "0.0.0.0:443",
        Path("/etc/apache2/ssl/catalog.pem"),  # relative to ServerRoot
        Path("/etc/ssl/private/catalog.key"),
    )
    (svc,) = config.services
    assert svc.hosts == ["catalog.district.example", "opac.district.example"]
    assert svc.preserve_host is False
    assert svc.rewrite.cookie_domain == {"backend.internal": "catalog.district.example"}
    assert svc.rewrite.cookie_path == {"/app": "/"}
    assert notes == [
        ("tls/httpd.conf", 12, "ServerAlias *.catalog.district.example"),
        ("tls/httpd.conf", 16, "SSLProtocol all -SSLv3 -TLSv1 -TLSv1.1"),
        ("tls/httpd.conf", 19, "ProxyAddHeaders Off"),
        ("tls/httpd.conf", 22, "ProxyPassReverse / http://backend.internal/"),
        ("tls/httpd.conf", 25, 'Header always set Strict-Transport-Security max-age=63072000'),
        ("tls/httpd.conf", 26, "CustomLog /var/log/apache2/catalog.log combined"),
    ]


def test_includes_globs_defines_and_location_blocks() -> None:
    config, notes = imported("includes/apache2.conf")
    assert [ln.address for ln in config.listen] == ["127.0.0.1:8080"]
    api, ws = config.services
    assert (api.hosts, api.path_prefix, api.preserve_host) == (["app.local"], "/api/", True)
    assert api.backends[0].url == "http://127.0.0.1:8001"  # ${APP_PORT} from Define
    assert (api.pool.max_connections, api.pool.keepalive_timeout) == (50, 30.0)  # ProxySet ttl=
    assert api.rewrite.location is True
    assert (ws.path_prefix, ws.backends[0].url, ws.rewrite.location) == ("/ws/", "http://127.0.0.1:8001", False)
    assert notes == [
        ("includes/conf.d/10-proxy.conf", 3, "ProxyVia Off"),
        ("includes/conf.d/10-proxy.conf", 5, "<IfModule !mod_proxy.c>"),
        ("includes/sites-enabled/app.conf", 6, "Require all granted"),
    ]


def test_cli_writes_a_file_check_config_accepts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hotspare.yaml"
    code = run(argparse.Namespace(file=str(DATA / "balancer" / "httpd.conf"), out=str(out), server_root=None))
    assert code == 0
    config = load_config(out, env={})
    assert [b.name for b in config.services[0].backends] == ["a", "b"]
    err = capsys.readouterr().err
    assert f"not translated: {DATA / 'balancer' / 'httpd.conf'}:18: ProxyPass /static/ !: exclusions" in err
    assert "1 service(s); 9 directive(s) not translated" in err
    # The same list is kept as comments at the top of the file.
    assert out.read_text().count("\n#   ") == 9


def test_cli_refuses_config_without_proxypass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "httpd.conf"
    src.write_text("Listen 80\nDocumentRoot /var/www\n")
    out = tmp_path / "out.yaml"
    assert run(argparse.Namespace(file=str(src), out=str(out), server_root=None)) == 2
    err = capsys.readouterr().err
    assert "services: expected at least 1 item(s)" in err
    assert f"not translated: {src}:2: DocumentRoot /var/www" in err
    assert not out.exists()


SITE = """<VirtualHost *:443>
    ServerName catalog.district.example
    SSLEngine on
    SSLCertificateFile /etc/ssl/catalog.pem
    SSLCertificateKeyFile /etc/ssl/private/catalog.key
    ProxyPass / http://127.0.0.1:8001/
</VirtualHost>
"""


def test_site_file_without_listen_says_which_file_to_point_at(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site.conf"
    site.write_text(SITE)
    out = tmp_path / "out.yaml"
    assert run(argparse.Namespace(file=str(site), out=str(out), server_root=None, listen=[])) == 2
    err = capsys.readouterr().err
    assert f"  listen: no Listen directive found in {site} or the files it includes; point import-apache at " \
        "the main config that includes ports.conf (Debian: /etc/apache2/apache2.conf), or give --listen " \
        "[HOST:]PORT\n" in err
    assert "listen: expected at least 1 item(s)" not in err
    assert not out.exists()


def test_listen_option_stands_for_ports_conf(tmp_path: Path) -> None:
    site = tmp_path / "site.conf"
    site.write_text(SITE)
    out = tmp_path / "out.yaml"
    assert run(argparse.Namespace(file=str(site), out=str(out), server_root=None, listen=["127.0.0.1:443"])) == 0
    config = load_config(out, env={})
    (listener,) = config.listen
    # Read as a Listen line: the virtual host's certificate lands on the listener of its port.
    assert (listener.address, str(listener.cert)) == ("127.0.0.1:443", "/etc/ssl/catalog.pem")


def test_undefined_variable_in_a_backend_url_is_reported_not_a_crash(tmp_path: Path) -> None:
    site = tmp_path / "app.conf"
    site.write_text("Listen 127.0.0.1:8080\nProxyPass /api/ http://127.0.0.1:${APP_PORT}/api/\n")
    t = import_apache(site)
    assert [(u.line, u.reason) for u in t.untranslated] == [(2, (
        "backend URL http://127.0.0.1:${APP_PORT}/api/ has no valid port: ${APP_PORT} is not defined here "
        "(a Define in a file that includes this one? point import-apache at that file)"))]


# -- the parser, on its own ------------------------------------------------------------


def test_parser_continuations_quotes_comments_and_sections() -> None:
    text = '# comment\nProxyPass /a \\\n   "http://h:1/a b" retry=0\n<Proxy "balancer://x">\n  ProxySet lbmethod=byrequests\n</proxy>\n'
    (pp, proxy) = parse_text(text, "f.conf")
    assert (pp.name, pp.args, pp.line) == ("ProxyPass", ("/a", "http://h:1/a b", "retry=0"), 2)
    assert proxy.args == ("balancer://x",) and proxy.children is not None
    assert proxy.children[0].line == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<VirtualHost *:80>\nServerName a\n", "f.conf:1: <VirtualHost> is never closed"),
        ("<VirtualHost *:80>\n</Proxy>\n", "f.conf:2: </Proxy> closes <VirtualHost> opened at line 1"),
        ('ServerName "abc\n', "f.conf:1: unterminated \" quote"),
        ("</Location>\n", "f.conf:1: </Location> without an opening <Location>"),
    ],
)
def test_parser_errors_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(ApacheConfigError) as info:
        parse_text(text, "f.conf")
    assert str(info.value).startswith(message)


def test_missing_include_and_include_loop_are_errors(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("Include b.conf\n")
    (tmp_path / "b.conf").write_text("Listen 80\nInclude a.conf\n")
    with pytest.raises(ApacheConfigError, match=r"b.conf:2: Include loop"):
        load_apache_config(tmp_path / "a.conf")
    (tmp_path / "c.conf").write_text("IncludeOptional none/*.conf\nInclude nothing-here.conf\n")
    with pytest.raises(ApacheConfigError, match=r"c.conf:2: Include 'nothing-here.conf': no such file"):
        load_apache_config(tmp_path / "c.conf")


def test_two_active_members_report_the_second_and_vhost_on_two_ports_merges(tmp_path: Path) -> None:
    conf = (
        "Listen 80\nListen 8443\n"
        "<Proxy balancer://c>\n BalancerMember http://127.0.0.1:1\n BalancerMember http://127.0.0.1:2\n</Proxy>\n"
        "<VirtualHost *:80>\n ServerName x\n ProxyPass / balancer://c/\n</VirtualHost>\n"
        "<VirtualHost *:8443>\n ServerName x\n ProxyPass / balancer://c/\n</VirtualHost>\n"
    )
    t = translate(parse_text(conf, "m.conf"))
    config = parse_config(t.config, env={})
    assert len(config.services) == 1  # the same route on two ports is one service
    assert [(u.line, u.directive) for u in t.untranslated] == [(5, "BalancerMember http://127.0.0.1:2")]
    assert "becomes a spare" in t.untranslated[0].reason
    # Round trip through YAML stays valid.
    assert parse_config(yaml.safe_load(yaml.safe_dump(t.config)), env={}).services[0].name == "x"


def test_path_mapping_hotspare_cannot_express_is_reported() -> None:
    conf = (
        "Listen 80\n"
        "ProxyPass /app/ http://127.0.0.1:1/other/\n"  # /app/x -> /other/x: needs prefix stripping
        "ProxyPass / http://127.0.0.1:2/base/\n"  # /x -> /base/x: a prepended path
    )
    t = translate(parse_text(conf, "m.conf"))
    config = parse_config(t.config, env={})
    (svc,) = config.services
    assert (svc.path_prefix, svc.backends[0].url) == ("/", "http://127.0.0.1:2/base/")
    assert [(u.line, u.directive) for u in t.untranslated] == [(2, "ProxyPass /app/ http://127.0.0.1:1/other/")]
    assert "cannot strip or replace a prefix" in t.untranslated[0].reason
