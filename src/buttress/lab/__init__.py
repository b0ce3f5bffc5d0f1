"""The buttress lab: run the real strategy objects in virtual time against modelled outages.

Command line: ``buttress lab run SCENARIO.toml`` (see ``docs/lab.md``). From Python::

    from buttress.lab import load_scenario, run_scenario

    results = run_scenario(load_scenario("examples/scenarios/s4-metastable-retry-storm.toml"))

Layer 8: may import everything in buttress; nothing imports it.
"""

from __future__ import annotations

from .errors import (
    CallTimeoutError,
    ConflictError,
    DependencyError,
    OverloadedError,
    ScenarioError,
    ServerError,
    ThrottledError,
    UnavailableError,
)
from .run import run_one
from .runner import run_scenario
from .scenario import Scenario, load_scenario, parse_scenario
from .sim import Scheduler, SimClock, SimRuntime

__all__ = [
    "CallTimeoutError",
    "ConflictError",
    "DependencyError",
    "OverloadedError",
    "Scenario",
    "ScenarioError",
    "Scheduler",
    "ServerError",
    "SimClock",
    "SimRuntime",
    "ThrottledError",
    "UnavailableError",
    "load_scenario",
    "parse_scenario",
    "run_one",
    "run_scenario",
]
