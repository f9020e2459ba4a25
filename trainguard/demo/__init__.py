"""``trainguard demo``: the whole pipeline on one machine, telling one sabotage's story.

:mod:`.run` drives it, :mod:`.pages` delivers its pages through a local Alertmanager and
:mod:`.views` writes the dashboards and the incident report of the run.
"""

from trainguard.demo.run import DemoOptions, run_demo

__all__ = ["DemoOptions", "run_demo"]
