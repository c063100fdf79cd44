"""adsim: an agent-based simulator of a Xiaohongshu-style social-commerce ad market.

``simulator.run(path_or_scenario)`` runs a scenario and returns its tables;
``simulator.Market(scenario)`` is the Mesa model a notebook can step day by day.
"""

from simulator.batch import batch
from simulator.compare import compare
from simulator.market import Market
from simulator.results import Result, load_run, run
from simulator.scenario import Scenario, ScenarioError, load_scenario

__all__ = ["Market", "Result", "Scenario", "ScenarioError", "batch", "compare", "load_run", "load_scenario", "run"]
__version__ = "0.1.0"
