"""Slow, obvious per-session Python implementations of the auction and the billing.

They follow DESIGN.md section 3 literally, one session and one impression at a
time, so the vectorized engine can be checked against them on small inputs.
"""

from __future__ import annotations

import math

import numpy as np


def session_ranks(eligible, lift, device, per_event, device_mult, base_rate, lift_power, qs_factor, floor, value_lift=None):
    """[(rank, column, value)] of the ads that may win in one session, best first (ties: lower column)."""
    cands = []
    for j in range(len(per_event)):
        if not eligible[j]:
            continue
        value = float(per_event[j])
        if device_mult is not None:
            value = value * float(device_mult[j, device])
        lf = float(lift[j])
        if value_lift is not None and value_lift[j]:
            value = value * lf  # oCPC: a click is worth target x pCVR(user)
        if lift_power[j] == 0:
            rate = 1.0 * float(base_rate[j])
        else:
            rate = lf * float(base_rate[j])
            if lift_power[j] == 2:
                rate = rate * lf
        rank = value * rate * float(qs_factor[j])
        if rank >= floor and rank > 0:
            cands.append((rank, j, value))
    cands.sort(key=lambda t: (-t[0], t[1]))
    return cands


def session_auction(cands, n_slots, floor, mechanism, view):
    """[(slot, column, price per billing event)] for one session."""
    out = []
    winners = cands[:n_slots]
    ranks_below = [c[0] for c in cands[1 : n_slots + 1]]
    ranks_below += [0.0] * (n_slots - len(ranks_below))
    for k, (rank, j, value) in enumerate(winners):
        if mechanism == "gsp":
            paid = max(ranks_below[k], floor)
        elif mechanism == "first_price":
            paid = rank
        else:  # vcg, positions weighted by view factors
            v = [*list(view), 0.0]
            paid = sum((v[i] - v[i + 1]) * max(ranks_below[i], floor) for i in range(k, n_slots)) / v[k]
        out.append((k, j, value * min(paid / rank, 1.0)))
    return out


def bill_in_time_order(camp_of_imp, sessions_of_imp, amounts, events, remaining, session_camps, dead=()):
    """Sequential billing: returns (billed, over, n_sessions_committed).

    An event that would take a campaign past what it may still spend is delivered but not
    billed, and the campaign leaves the auction: serving stops before the first later session
    whose auction had it among its candidates for the slots or the price (``session_camps[s]``:
    the campaigns of session s's top ``n_slots + 1``); that session is auctioned again.
    ``dead``: campaigns that ran out before the first session.
    """
    spent: dict[int, int] = {}
    billed = np.zeros(len(amounts), dtype=np.int64)
    over = np.zeros(len(amounts), dtype=bool)
    dead = {int(c) for c in dead}
    for s, camps in enumerate(session_camps):
        if camps & dead:
            return billed, over, s
        for i in np.flatnonzero(np.asarray(sessions_of_imp) == s):
            if not events[i]:
                continue
            c = int(camp_of_imp[i])
            total = spent.get(c, 0) + int(amounts[i])
            spent[c] = total
            if total > remaining[c]:
                over[i] = True
                dead.add(c)
            else:
                billed[i] = amounts[i]
    return billed, over, math.inf
