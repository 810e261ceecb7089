"""The demo application server (``python -m hotspare.demo.app``): a small library app
like the original, for ``hotspare demo`` (router/cli/demo.py) and the tests."""
