"""Sinks: where validated records and findings are written (the ClickHouse store)."""
