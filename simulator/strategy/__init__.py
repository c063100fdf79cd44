"""Advertiser strategy: pacing controllers and bid rules, resolved by name through registries.

Nothing here is ever imported or evaluated by a name read from a file: the
scenario's names are checked against the literal keys of ``PACERS`` and
``RULES``.
"""

from simulator.strategy.pacing import PACERS, Pacer, PacingBank, PaceState, make_pacer
from simulator.strategy.rules import RULES, BidRule, CampaignPlan, RuleContext, make_rule

__all__ = [
    "PACERS",
    "RULES",
    "BidRule",
    "CampaignPlan",
    "PaceState",
    "Pacer",
    "PacingBank",
    "RuleContext",
    "make_pacer",
    "make_rule",
]
