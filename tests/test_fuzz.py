"""A fuzzer over scenario files: mutate a valid scenario, and it runs or is refused cleanly.

Hypothesis takes a valid, tiny scenario (1,000 users, one day) and applies one to
three mutations anywhere in it: delete a key, replace a value by one of another
type, an extreme or non-finite number, a huge or odd string, unicode, a date, a
list or a table; add an unknown key; wrap a value in a list or a table.  The
result is written as a TOML file and checked through the command line:
``validate`` either accepts it (exit 0) or prints one ``FILE: field: message``
line per problem with exit 2, never a traceback.  Accepted mutants also run.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from simulator import run
from simulator.cli import app
from simulator.scenario import ScenarioError, load_scenario

BASE: dict[str, Any] = {
    "name": "fuzz_base",
    "seed": 3,
    "start_date": dt.date(2026, 11, 9),
    "days": 1,
    "platform": "meta",
    "population": {"users": 1000, "female_share": 0.7, "age_shares": [0.3, 0.4, 0.2, 0.1]},
    "traffic": {"sessions_per_user_per_day": 2.0, "ad_slots": 2, "view_factors": [1.0, 0.6], "frequency_cap": 3},
    "auction": {"mechanism": "gsp", "reserve_ecpm": 5.0, "min_quality": 3.0},
    "quality": {"dynamic": True, "weights": {"relevance": 0.5, "history": 0.1, "content": 0.1, "engagement": 0.1, "landing": 0.1, "reputation": 0.1}},
    "calendar": {"events": [{"preset": "singles_day"}, {"name": "flash", "start": dt.date(2026, 11, 9), "end": dt.date(2026, 11, 10), "traffic": 1.5}]},
    "advertisers": [
        {
            "name": "glow",
            "category": "beauty",
            "account": {"followers": 5000, "history_conversions": 60},
            "strategy": {
                "pacing": "even",
                "rules": [
                    {"rule": "daypart", "hours": [19, 23], "multiplier": 1.3},
                    {"rule": "seasonal", "event": "singles_day", "multiplier": 1.2},
                ],
            },
            "campaigns": [
                {
                    "name": "serum",
                    "bid": {"type": "CPA", "amount": 60.0},
                    "budget": {"daily": 300.0, "total": 3000.0},
                    "targeting": {"interests": ["beauty", "fashion"], "gender": "female", "ages": ["18-24", "25-34"]},
                    "creatives": [{"name": "ugc", "format": "video"}, {"name": "studio", "production": 0.9}],
                }
            ],
        },
        {
            "name": "bistro",
            "category": "food",
            "campaigns": [{"name": "lunch", "bid": {"type": "CPC", "amount": 1.2}, "budget": {"daily": 80.0}}],
        },
    ],
    "generate": [{"count": 3, "categories": ["food", "travel"], "daily_budget": {"lognormal": [5.0, 0.5]}, "name_prefix": "g"}],
}

# ---------------------------------------------------------------- a TOML writer for anything JSON-like


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string with \\uXXXX escapes is a TOML basic string
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items() if x is not None) + " }"
    raise TypeError(type(v))


def toml_document(data: dict[str, Any]) -> str:
    return "\n".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in data.items() if v is not None) + "\n"


def test_writer_round_trips_the_base(tmp_path: Path):
    path = tmp_path / "base.toml"
    path.write_text(toml_document(BASE), encoding="utf-8")
    spec = load_scenario(path)
    assert spec.name == "fuzz_base" and len(spec.advertisers) == 2 and spec.platform == "meta"


# ---------------------------------------------------------------- mutations

ODD_STRINGS = ["", " ", "x" * 100_000, "美妆", "🙂🙂", "a\nb", "tab\there", "../../etc/passwd", "/abs/path", "NaN", "1e5", "true", "\u202e"]
EXTREME_NUMBERS = [0, -1, 1, -0.0, 1e-300, 5e-324, 1e308, -1e308, 2**31, 2**63, 2**70, -(2**70), 1e9, 1e6 + 0.5, math.nan, math.inf, -math.inf]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(EXTREME_NUMBERS),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(ODD_STRINGS),
    st.text(max_size=12),
    st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.dictionaries(st.sampled_from(["a", "value", "preset", "rule", "type", "daily", "lognormal"]), scalars, max_size=3),
)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every location in a nested dict/list, as a tuple of keys and indices."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for k, v in items:
        out.append((*prefix, k))
        out.extend(paths(v, (*prefix, k)))
    return out


def get_parent(data: Any, path: tuple) -> Any:
    node = data
    for k in path[:-1]:
        node = node[k]
    return node


@st.composite
def mutants(draw: st.DrawFn) -> tuple[dict[str, Any], list[str]]:
    data = copy.deepcopy(BASE)
    log = []
    for _ in range(draw(st.integers(1, 3))):
        locs = paths(data)
        if not locs:
            break
        path = draw(st.sampled_from(locs))
        parent, key = get_parent(data, path), path[-1]
        op = draw(st.sampled_from(["delete", "replace", "replace", "replace", "unknown_key", "wrap_list", "wrap_table", "scale"]))
        log.append(f"{op} {'.'.join(map(str, path))}")
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(values)
        elif op == "unknown_key":
            target = parent if isinstance(parent, dict) else data
            target[draw(st.sampled_from(["extra", "dayz", "users", "daily_budget", "ruel", "名字", "a b", "x" * 300]))] = draw(scalars)
        elif op == "wrap_list":
            parent[key] = [parent[key]]
        elif op == "wrap_table":
            parent[key] = {"value": parent[key]}
        elif op == "scale":
            old = parent[key]
            if isinstance(old, (int, float)) and not isinstance(old, bool):
                factor = draw(st.sampled_from([-1, 0, 1e-9, 1e-3, 10, 1e6, 1e12]))
                new = old * factor
                parent[key] = int(new) if isinstance(old, int) and math.isfinite(new) else new
    return data, log


# ---------------------------------------------------------------- the checks

STATS = {"tried": 0, "accepted": 0, "refused": 0, "ran": 0}


def check_validate(data: dict[str, Any], tmp: Path) -> bool:
    """Validate through the CLI; True if accepted.  Refusals must be clean."""
    path = tmp / "mutant.toml"
    try:
        text = toml_document(data)
    except TypeError:
        return False
    path.write_text(text, encoding="utf-8")
    STATS["tried"] += 1
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        STATS["accepted"] += 1
        assert result.stdout.startswith(f"{path}: ok")
        return True
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert lines
    for line in lines:
        assert line.startswith(f"{path}: "), line
        rest = line[len(str(path)) + 2 :]
        # the field path (or a file-level problem), then the message
        assert ": " in rest or rest.startswith(("TOML", "the file", "not a")), line
        assert len(line) < 1000, line[:200]  # values and keys are cut short, never dumped
    STATS["refused"] += 1
    return False


def small_enough(spec: Any) -> bool:
    n_ads = sum(len(c.creatives) for a in spec.advertisers for c in a.campaigns) + sum(g.count for g in spec.generate)
    work = spec.population.users * spec.traffic.sessions_per_user_per_day * spec.days * n_ads
    return work <= 1000 * 2.0 * 1 * 10 * 4 and spec.traffic.chunks_per_hour <= 8


def check_runs(path: Path) -> None:
    """An accepted mutant of tiny size runs, and its money adds up."""
    spec = load_scenario(path)
    if not small_enough(spec):
        return
    result = run(spec)
    STATS["ran"] += 1
    md, daily = result.market_daily, result.advertiser_daily
    assert (md["revenue_micro"] == md["spend_micro"]).all()
    assert round(daily["spend"].sum(), 6) == round(md["revenue"].sum(), 6)
    for col in ("impressions", "clicks", "conversions", "spend"):
        assert np.isfinite(daily[col].to_numpy(dtype=float)).all(), col


@settings(max_examples=int(os.environ.get("ADSIM_FUZZ_EXAMPLES", 250)), deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(mutants())
def test_mutated_scenarios_validate_or_are_refused_cleanly(tmp_path_factory: pytest.TempPathFactory, case):
    data, _log = case
    tmp = tmp_path_factory.mktemp("fuzz")
    check_validate(data, tmp)


@pytest.mark.slow
@settings(max_examples=int(os.environ.get("ADSIM_FUZZ_RUNS", 25)), deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(mutants())
def test_accepted_mutants_run(tmp_path_factory: pytest.TempPathFactory, case):
    data, _log = case
    tmp = tmp_path_factory.mktemp("fuzzrun")
    if check_validate(data, tmp):
        check_runs(tmp / "mutant.toml")


def test_fuzz_statistics_are_sane():
    """Runs after the fuzzers in file order: they tried cases and both outcomes occurred."""
    if STATS["tried"] == 0:
        pytest.skip("fuzzers not run in this session")
    print(f"\nfuzz: {STATS}")
    assert STATS["tried"] == STATS["accepted"] + STATS["refused"]
    assert STATS["refused"] > 0 and STATS["accepted"] > 0


def test_base_scenario_is_valid_and_errors_carry_the_file(tmp_path: Path):
    path = tmp_path / "base.toml"
    path.write_text(toml_document(BASE), encoding="utf-8")
    assert check_validate(BASE, tmp_path)
    bad = copy.deepcopy(BASE)
    bad["advertisers"][0]["campaigns"][0]["budget"]["daily"] = math.nan
    path.write_text(toml_document(bad), encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.lines == [f"{path}: advertisers.0.campaigns.0.budget.daily: must be a finite number (not nan or inf) (got nan)"]
