"""Maintainer benchmarks, kept out of the shipped package: `python -m benchmarks.memory` (see docs/memory.md)."""
