"""Local services for the demo, the scorecard, the benchmarks and the integration tests.

A Kafka broker from the Maven Central jars (:mod:`.broker`), Debian's Prometheus
Alertmanager (:mod:`.alertmanager`), a recording webhook server (:mod:`.webhook_server`)
and the stream worker as a subprocess (:mod:`.worker`), composed by one harness,
:class:`~trainguard.local.stack.LocalStack` (:mod:`.stack`), that the demo, the scorecard,
the benchmarks and the integration tests start. None of this runs in production; it sits
in the top layer beside the CLI.
"""
