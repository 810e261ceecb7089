"""The project's benchmarks (run as scripts; see bench/README.md)."""
