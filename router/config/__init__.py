"""Loading the one deployment file: ``load_config(path) -> Config``.

Rules:

1. This is the only parser of the file. The router, the agents and every command read
   the deployment through it, so they can never disagree about what it says.
2. Validation is complete before anything starts: every error is collected in one run,
   checks across entries (unique names, one service per route) included, each naming
   its dotted key path (``services[0].health.fall``), what was expected and what was
   found. Unknown keys are errors, with the allowed key they most likely meant.
3. ``${NAME}`` in any string is replaced by the environment variable ``NAME``; an unset
   one is an error at that key, the report ends with the one command that sets every
   unset variable, and an error that only repeats it is not printed. Secrets may
   instead come from ``*_file: PATH``.
4. Relative paths (``state_file``, ``token_file``, certificates, roots) are relative to
   the directory of the config file, so the same file means the same thing wherever
   the process was started.
5. Only the command line turns a :class:`ConfigError` into exit status 2.

The modules: :mod:`.values` (host:port, URLs, paths), :mod:`.sections` (the models),
:mod:`.cross` (checks across entries), :mod:`.messages` (how an error reads),
:mod:`.loader` (YAML, substitution, the report), :mod:`.envfile` (``--env-file``).
"""

from __future__ import annotations

from router.errors import ConfigError

from .envfile import read_env_file
from .loader import load_config, parse_config
from .sections import (
    AdminConfig,
    BackendConfig,
    ClusterConfig,
    Config,
    EtcdConfig,
    FailoverConfig,
    HealthConfig,
    HoldConfig,
    LimitsConfig,
    ListenerConfig,
    LogConfig,
    PoolConfig,
    RewriteConfig,
    ServiceConfig,
    TimeoutsConfig,
)
from .values import is_loopback, parse_hostport

__all__ = [
    "AdminConfig",
    "BackendConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "EtcdConfig",
    "FailoverConfig",
    "HealthConfig",
    "HoldConfig",
    "LimitsConfig",
    "ListenerConfig",
    "LogConfig",
    "PoolConfig",
    "RewriteConfig",
    "ServiceConfig",
    "TimeoutsConfig",
    "is_loopback",
    "load_config",
    "parse_config",
    "parse_hostport",
    "read_env_file",
]
