"""adsim: an agent-based simulator of a Xiaohongshu-style social-commerce ad market.

``simulator.run(path_or_scenario)`` runs a scenario and returns its tables;
``simulator.Market(scenario)`` is the Mesa model a notebook can step day by day.
"""

import os

# The compiled passes split large batches between threads (numba over OpenMP).  By default an
# OpenMP worker keeps spinning for a while after each pass, holding the second core that numpy
# and the engine's own helper thread want next; asked to wait passively, it yields it at once.
# (Read when OpenMP starts, at the first parallel pass; a setting of the user's is kept.)
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

from simulator.batch import batch
from simulator.compare import compare
from simulator.market import Market
from simulator.results import Result, load_run, run
from simulator.scenario import Scenario, ScenarioError, load_scenario

__all__ = ["Market", "Result", "Scenario", "ScenarioError", "batch", "compare", "load_run", "load_scenario", "run"]
__version__ = "0.1.0"
