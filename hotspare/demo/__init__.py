"""The demo: application servers like the original, and `hotspare demo`."""
