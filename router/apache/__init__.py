"""Reading Apache httpd configs and translating their mod_proxy parts into hotspare's
deployment file. :mod:`.parser` turns text into directives (with file and line);
:mod:`.translate` is a pure function from directives to a config tree plus the list of
what it could not translate. The command is :mod:`router.cli.import_apache`."""

from .parser import ApacheConfigError, Directive, load_apache_config, parse_text
from .translate import Translation, Untranslated, translate

__all__ = [
    "ApacheConfigError",
    "Directive",
    "Translation",
    "Untranslated",
    "load_apache_config",
    "parse_text",
    "translate",
]
