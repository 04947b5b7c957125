"""Benchmarks run by ``avatar bench NAME``: each module has ``main(settings, quick) -> int``."""
