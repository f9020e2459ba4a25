"""Node agents: collect GPU telemetry and training steps on a node and ship them to Kafka.

Installed on every GPU node with ``pip install trainguard[agent]``: this package and
its dependencies must stay light (no faust, numpy, chdb or clickhouse-connect).
"""
