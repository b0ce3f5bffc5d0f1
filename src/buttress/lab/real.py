"""Real mode (``buttress lab run --real``): not available yet in this version.

Planned: the scenario's replicas as HTTP servers on 127.0.0.1 with faults applied live,
and httpx clients through the same pipelines, in wall-clock time (see docs/lab.md).
"""

from __future__ import annotations

from typing import Any

from .errors import ScenarioError
from .scenario import PipelineSpec, Scenario

__all__ = ["run_real"]


def run_real(
    scenario: Scenario, *, seeds: int | None = None, extra: tuple[PipelineSpec, ...] = ()
) -> dict[str, Any]:
    """Run ``scenario`` in wall-clock time over the network.

    Raises:
        ScenarioError: Always, for now: real mode is not built yet.
    """
    raise ScenarioError(
        scenario.source, "", "--real is not available yet in this version of the lab"
    )
