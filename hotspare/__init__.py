"""hotspare: a real hot spare for an application server."""

__version__ = "0.1.0"
