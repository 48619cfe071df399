"""Benchmarks: how fast and how small rotator is, and how it compares with what users run instead.

`make bench` (`python -m bench.run_all`) runs every measurement and rewrites the tables in
docs/benchmarks.md; `--quick` is a sub-minute run. Each module also runs alone, e.g.
`python -m bench.mint --quick`. Nothing here is imported by rotator itself.
"""
