"""adsim: an agent-based simulator of a Xiaohongshu-style social-commerce ad market.

``simulator.run(path_or_scenario)`` runs a scenario and returns its tables;
``simulator.Market(scenario)`` is the Mesa model a notebook can step day by day.
"""

import os

# The compiled passes split large batches between threads (numba over OpenMP).  By default a GNU
# OpenMP worker spins 300,000 rounds (milliseconds) after each pass, holding the second core that
# numpy and the engine's own helper thread want next; a passive worker sleeps at once, but waking
# it costs 60-100 us at each pass.  10,000 rounds (0.3 ms here) bridge the short gaps between the
# passes of a chunk (a block's auction, responses and re-auctions) and free the core in the longer
# Python stretches between chunks; other OpenMP runtimes wait passively.  (Read when OpenMP starts,
# at the first parallel pass; a setting of the user's is kept.)
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    os.environ["GOMP_SPINCOUNT"] = "10000"

from simulator.batch import batch
from simulator.compare import compare
from simulator.market import Market
from simulator.results import Result, load_run, run
from simulator.scenario import Scenario, ScenarioError, load_scenario

__all__ = ["Market", "Result", "Scenario", "ScenarioError", "batch", "compare", "load_run", "load_scenario", "run"]
__version__ = "0.1.0"
