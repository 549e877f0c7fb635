"""Bench client programs (``python -m tools.bench.clients.NAME SPEC.json``)."""
