"""``trainguard eval``: every scenario through the real pipeline, scored against ground truth.

:mod:`.run` runs the scenarios; :mod:`.scorecard` turns findings into verdicts.
"""

from trainguard.evaluation.run import EvalOptions, EvalReport, latency_line, run_eval

__all__ = ["EvalOptions", "EvalReport", "latency_line", "run_eval"]
