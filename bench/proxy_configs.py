"""The generated configs of bench/proxy_bench.py: the nginx backend, and each proxy under
test configured alike (keep-alive both ways, no logging unless asked).

Rules: every program listens on 127.0.0.1 only and keeps its pid, temp and error files
in the run's directory; ``workers`` is 1 when the proxies are pinned to one core and the
machine's core count when not (HAProxy threads, nginx worker processes, Apache child
processes of 64 threads each).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["apache_config", "haproxy_config", "hotspare_config", "nginx_backend_config", "nginx_proxy_config"]

APACHE_MODULES = "/usr/lib/apache2/modules"
APACHE_THREADS = 64


def _nginx_common(workdir: Path, name: str, workers: int) -> str:
    tmp = workdir / f"{name}-tmp"
    tmp.mkdir(exist_ok=True)
    return f"""\
daemon off;
master_process on;
worker_processes {workers};
user root;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
"""


def nginx_backend_config(workdir: Path, port: int) -> str:
    """The origin every proxy forwards to: static /100b and /1mib, and /health."""
    return _nginx_common(workdir, "nginx", 1) + f"""\
    sendfile on;
    tcp_nopush on;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {workdir}/www;
        location = /health {{ return 200 "ok\\n"; }}
    }}
}}
"""


def nginx_proxy_config(workdir: Path, port: int, backend: int, workers: int) -> str:
    """nginx as a reverse proxy: HTTP/1.1 upstream with a kept-alive pool."""
    return _nginx_common(workdir, "nginx-proxy", workers) + f"""\
    upstream be {{
        server 127.0.0.1:{backend};
        keepalive 128;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""


def haproxy_config(port: int, backend: int, workers: int) -> str:
    # Keep-alive both ways, connections to the server reused, no logging at all.
    return f"""\
global
    nbthread {workers}
    maxconn 4000
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server nginx 127.0.0.1:{backend}
"""


def apache_config(workdir: Path, port: int, backend: int, workers: int) -> str:
    """httpd with mod_proxy_http and the event MPM: ``workers`` children of 64 threads;
    mod_proxy keeps its backend connections alive (reuse is its default)."""
    user = "User nobody\nGroup nogroup\n" if os.geteuid() == 0 else ""
    threads = APACHE_THREADS * workers
    return f"""\
ServerRoot "{workdir}"
DefaultRuntimeDir "{workdir}"
PidFile "{workdir}/apache.pid"
Mutex file:{workdir} default
ErrorLog "{workdir}/apache-error.log"
LogLevel warn
{user}Listen 127.0.0.1:{port}
ServerName 127.0.0.1
LoadModule mpm_event_module {APACHE_MODULES}/mod_mpm_event.so
LoadModule authz_core_module {APACHE_MODULES}/mod_authz_core.so
LoadModule proxy_module {APACHE_MODULES}/mod_proxy.so
LoadModule proxy_http_module {APACHE_MODULES}/mod_proxy_http.so
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 60
StartServers {workers}
ServerLimit {workers}
ThreadLimit {APACHE_THREADS}
ThreadsPerChild {APACHE_THREADS}
MinSpareThreads 1
MaxSpareThreads {threads}
MaxRequestWorkers {threads}
MaxConnectionsPerChild 0
ProxyRequests Off
ProxyPreserveHost On
ProxyPass / http://127.0.0.1:{backend}/
"""


def hotspare_config(workdir: Path, listen: int, admin: int, backend: int, tag: str, access_log: bool) -> str:
    """One service, one backend. ``access_log``: the default combined format to a file in
    ``workdir`` (the router's default is a log; the bench measures both)."""
    log = f"{workdir}/access{tag}.log" if access_log else "null"
    return f"""\
listen: ["127.0.0.1:{listen}"]
admin: {{listen: "127.0.0.1:{admin}"}}
state_file: {workdir}/hotspare-state{tag}.json
log: {{access_log: {log}, level: warning}}
services:
  - name: app
    backends:
      - {{name: nginx, url: "http://127.0.0.1:{backend}"}}
    health: {{path: /health, interval: 1s, timeout: 1s, rise: 1, fall: 3}}
"""
