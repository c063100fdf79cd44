"""The benchmark's report: ``docs/performance.md`` and its plots (``docs/img/perf_*.png``).

Takes the results dict of :func:`benchmarks.run.run_suite` and writes what was
measured, nothing else: every number in the document comes from that run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.run import axis_table, fmt, parts_table, summary_rows, table, targets


def _ok(points: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    return [p for p in points or [] if p and not p.get("skipped")]


def plots(res: dict[str, Any], img_dir: Path) -> dict[str, str]:
    """Draw the scaling curves, the parts and the rates; returns {name: path relative to the doc}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(img_dir / f"{name}.png", dpi=110)
        plt.close(fig)
        out[name] = f"{img_dir.name}/{name}.png"

    def loglog_fit(ax: Any, x: list[float], y: list[float], label: str) -> None:
        if len(x) >= 2 and min(x) > 0:
            # A line of slope 1 through the largest point: linear growth, for comparison.
            ax.plot([min(x), max(x)], [y[-1] * min(x) / max(x), y[-1]], ls=":", color="grey", label=label)

    for axis, key, xlabel, name in (
        ("users_axis", "users", "users", "perf_users"),
        ("advertisers", "advertisers", "advertisers", "perf_advertisers"),
        ("days_axis", "days", "days", "perf_days"),
    ):
        pts = _ok(res.get("ads_axis") if axis == "advertisers" else res.get(axis))
        if not pts:
            continue
        pts = sorted(pts, key=lambda p: p[key])
        x = [p[key] for p in pts]
        fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 3.8))
        a1.loglog(x, [p["simulate_s"] for p in pts], "o-", color="tab:blue", label="Market.run, wall s")
        a1.loglog(x, [p["simulate_cpu_s"] for p in pts], "s--", color="tab:orange", label="Market.run, CPU s")
        loglog_fit(a1, x, [p["simulate_cpu_s"] for p in pts], "linear")
        a1.set_xlabel(xlabel)
        a1.set_ylabel("seconds")
        a1.set_title("time")
        a1.legend(fontsize=8)
        a2.semilogx(x, [p["per_auction_us"] for p in pts], "o-", color="tab:blue", label="wall µs per auction")
        a2.semilogx(x, [p["per_auction_cpu_us"] for p in pts], "s--", color="tab:orange", label="CPU µs per auction")
        a2.set_xlabel(xlabel)
        a2.set_ylabel("µs per auction")
        a2.set_ylim(bottom=0)
        a2.set_title("cost per auction (session)")
        a2.legend(fontsize=8)
        a3.semilogx(x, [p["peak_rss_mb"] for p in pts], "o-", color="tab:green")
        a3.set_xlabel(xlabel)
        a3.set_ylabel("peak RSS, MB")
        a3.set_ylim(bottom=0)
        a3.set_title("peak memory (fresh process)")
        fixed = {"perf_users": "users_axis_fixed", "perf_advertisers": "ads_axis_fixed", "perf_days": "days_axis_fixed"}[name]
        fig.suptitle(f"scaling in {xlabel} ({_fixed_label(res, fixed)})", fontsize=10)
        save(fig, name)

    p = res.get("parts")
    if p:
        rows = [r for r in p["rows"] if r["cpu_s"] > 0]
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
        ax.barh([r["part"] for r in rows][::-1], [r["cpu_s"] for r in rows][::-1])
        ax.set_xlabel("CPU seconds (median)")
        ax.set_title(f"parts of one run: {p['users']:,} users x {p['advertisers']} advertisers x {p['days']} day(s)", fontsize=10)
        save(fig, "perf_parts")

    bars = []
    users, ads, days = res["config"]["headline"]
    refs = res["references"]
    for key, label in ((f"python_{ads}", "Python / Mesa\nreference"), (f"kernel_argpartition_{ads}", "numpy kernel\nargpartition"),
                       (f"kernel_argmax_{ads}", "numpy kernel\nargmax")):
        if key in refs:
            bars.append((label, refs[key]["auctions_per_cpu_s"]))
    e2e = res.get("e2e") or res.get("engine_headline")
    if e2e and not e2e.get("skipped"):
        bars.append(("engine\nend to end", e2e["auctions_per_cpu_s"]))
    same = [q for q in _ok(res.get("users_axis")) if q["users"] == users and q["advertisers"] == ads]
    if same:
        bars.append((f"engine Market.run\n({same[0]['days']} day, in-process)", same[0]["auctions_per_cpu_s"]))
    if bars:
        fig, ax = plt.subplots(figsize=(8, 3.8))
        ax.bar([b[0] for b in bars], [b[1] for b in bars], color=["grey", "tab:blue", "tab:blue", "tab:orange", "tab:orange"][: len(bars)])
        ax.set_yscale("log")
        ax.set_ylim(min(b[1] for b in bars) / 3, max(b[1] for b in bars) * 3)
        ax.set_ylabel("auctions per CPU second")
        ax.set_title(f"{ads} advertisers; engine at {users:,} users x {days} days", fontsize=10)
        for i, b in enumerate(bars):
            ax.text(i, b[1], f"{b[1]:,.0f}", ha="center", va="bottom", fontsize=8)
        save(fig, "perf_rates")
    return out


def _fixed_label(res: dict[str, Any], key: str) -> str:
    a, b = res["config"][key]
    return {"users_axis_fixed": f"{a} advertisers, {b} day(s)", "ads_axis_fixed": f"{a:,} users, {b} day(s)",
            "days_axis_fixed": f"{a:,} users, {b} advertisers"}[key]


def markdown(res: dict[str, Any], images: dict[str, str]) -> str:
    env = res["env"]
    cfg = res["config"]
    users, ads, days = cfg["headline"]
    lines = [
        "# Performance",
        "",
        "Measured by `benchmarks/run.py` (issue 8); rerun with `make bench` "
        "(`python benchmarks/run.py --full --out docs/performance.md`). Every figure below comes from that one run.",
        "",
        f"- date: {env['date']}; git commit measured: `{env['commit']}` ({env['commit_subject']})"
        + (f"; with uncommitted changes in `simulator/`: {', '.join(x.split()[-1] for x in env['engine_uncommitted'])}" if env["engine_uncommitted"] else ""),
        f"- machine: {env['cpu'] or 'unknown CPU'}, {env['cores']} cores, {env['memory_gb']} GB; "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        f"- load average (1, 5, 15 min) before: {', '.join(f'{x:.1f}' for x in env['load_before'])}; "
        f"after: {', '.join(f'{x:.1f}' for x in env.get('load_after', []))}; "
        f"benchmark wall time {res['elapsed_s'] / 60:.1f} min, configuration `{cfg['name']}`, up to {cfg['repeats']} runs per point "
        "(median; fewer where a point is long, see `repeats` in `benchmarks/results.json`).",
        "",
        "**Wall clock and CPU.** A large run uses both cores (the compiled passes split each batch between "
        "threads), so the targets are judged on wall-clock rates, the rates a user waits for. Every rate is also "
        "given per CPU second of the measured process (user + system time of all its threads): for the engine that "
        "counts both threads, so its CPU rates understate it; the reference points run on one thread. This machine's speed drifts by 20 to 30 % between "
        "runs, so compare figures of one run. Medians, not means.",
        "",
        "## Headline",
        "",
        table(["measurement", "auctions/s", "auctions/CPU s", "impressions/s", "impressions/CPU s", "peak RSS MB"], summary_rows(res)),
        "",
        "Auctions are sessions (`market_daily.sessions`), impressions are filled slots (`market_daily.filled_slots`). "
        "End to end is `python -m simulator run SCENARIO --out TMP -q` in a fresh process: interpreter start, imports, "
        "setup, the simulation, the tables, Parquet, `report.png` and the manifest; its CPU time is the whole process's. "
        "The reference points time only their loop.",
        "",
    ]
    if "perf_rates" in images:
        lines += [f"![auctions per CPU second]({images['perf_rates']})", ""]
    lines += ["## Targets", "", table(["target (issue 8)", "measured", ""], targets(res)), ""]
    found = findings(res)
    if found:
        lines += ["## What limits the rate (read off the numbers below)", "", *[f"- {f}" for f in found], ""]
    p = res.get("parts")
    lines += [
        "## Parts of a run",
        "",
        (f"`simulator.run(SCENARIO, out=DIR)` on {p['users']:,} users x {p['advertisers']} advertisers x {p['days']} day(s), "
         f"{fmt(p['sessions'])} auctions and {fmt(p['impressions'])} impressions, median of {p['repeats']} run(s), "
         "each in a fresh process.") if p else "",
        "",
        parts_table(res),
        "",
        "How: `benchmarks/measure.py parts` wraps the engine's named functions (`Population.draw_sessions`; "
        "`kernels.rank_top` (and its two paths), `auction.allocate`, `rank_prices`, `event_prices`; `Feed._setup` (a chunk's "
        "targeting masks, rank inputs and pruning order); `respond.respond` (the users' responses, billing and the "
        "re-auctions after budget crossings: compiled passes per block of sessions, whose first auctions, "
        "`kernels.select_rows`, are timed apart as ranking); the `Ledger`'s `record_*` and "
        "`close_day` and its compiled sums `kernels.ledger_sums`; the targeting matrix `kernels.admitted` (as "
        "targeting); `QualityModel.update`; `Market.__init__`, `Market.step`, `Market.tables`; `results.write_run`, "
        "`plots.save_report`; `Feed.serve_hour`; and any other public Python function of `simulator.kernels`, "
        "where the engine's fused kernels live) with timers and charges each part its exclusive time (its own "
        "time minus that of wrapped functions it calls), so the parts add up to the run. \"Eligibility, Ad Rank inputs, "
        "billing\" is what `Feed.serve_hour` and the functions it calls do besides the named ones: the live "
        "columns of each chunk, the order values and the bookkeeping of the impressions (`kernels.bump_frequency`, the "
        "frequency counts, among them). Functions the engine no longer has are listed below the table. A part's rate is the auctions (impressions) of the run divided by that part's CPU time: the "
        "rate the engine would reach if that part were all it did.",
    ]
    pm = res.get("parts_memory")
    if pm:
        lines += [
            "",
            f"Peak working memory per part: a separate run on {pm['users']:,} users x {pm['advertisers']} advertisers x "
            f"{pm['days']} day(s) under `tracemalloc` (which sees numpy's buffers): the most a part had allocated above "
            "what was allocated when it was entered. Its times are not used (tracing slows Python).",
        ]
    if p and p.get("missing"):
        lines += ["", f"Not found in this engine version (not timed): {', '.join(p['missing'])}."]
    if "perf_parts" in images:
        lines += ["", f"![parts]({images['perf_parts']})"]
    lines += ["", "## Scaling", ""]
    for title, key, axis, fixed, img in (
        ("Users", "users", "users_axis", "users_axis_fixed", "perf_users"),
        ("Advertisers", "advertisers", "ads_axis", "ads_axis_fixed", "perf_advertisers"),
        ("Days", "days", "days_axis", "days_axis_fixed", "perf_days"),
    ):
        lines += [f"### {title} ({_fixed_label(res, fixed)})", "", axis_table(res.get(axis) or [], key), ""]
        lines += [_verdict(res, axis, key), ""]
        if img in images:
            lines += [f"![{title}]({images[img]})", ""]
    lines += [
        "Each point is `Market(scenario).run()` timed in a fresh process (`benchmarks/measure.py engine`); peak RSS "
        "is that process's (`os.wait4`'s `ru_maxrss`). Scenarios come from `benchmarks/scenarios.py`: advertisers from "
        "one `[[generate]]` block over nine categories (CPM, CPC, CPE and CPA bids; asap, even and adaptive pacing), "
        f"and budgets scaled with the market ({_budget()} yuan per user per day over all advertisers, whatever the "
        "number of users and advertisers), so that the points differ in size, not in how tight budgets are.",
        "",
    ]
    npath = _ok(res.get("numpy_path"))
    if npath:
        u_a, d_a = cfg["ads_axis_fixed"]
        fused = {p["advertisers"]: p for p in _ok(res.get("ads_axis"))}
        rows = []
        for p in npath:
            f = fused.get(p["advertisers"])
            rows.append([f"{u_a:,} users x {p['advertisers']} advertisers x {d_a} day(s)",
                         fmt(f["auctions_per_s"]) if f else "-", fmt(f["auctions_per_cpu_s"]) if f else "-",
                         fmt(p["auctions_per_s"]), fmt(p["auctions_per_cpu_s"])])
        lines += [
            "### The engine's two kernel paths",
            "",
            "The engine ranks with a fused numba kernel, parallel over sessions, unless `ADSIM_NUMBA=0` selects its "
            "numpy path (`simulator/kernels.py`). Same point, both paths:",
            "",
            table(["point", "default: auctions/s", "auctions/CPU s", "ADSIM_NUMBA=0: auctions/s", "auctions/CPU s"], rows),
            "",
        ]
    sd = res.get("singles_day")
    if sd:
        lines += ["## Singles' Day season", ""]
        if sd.get("skipped"):
            lines += [f"{sd['users']:,} users x {sd['advertisers']} advertisers x {sd['days']} days from 20 October "
                      f"(`preset = \"singles_day\"`, half the advertisers bid up for it): not run, {sd['skipped']} "
                      f"(predicted {sd.get('predicted_s', 0):,.0f} s from the rates above).", ""]
        else:
            lines += [f"{sd['users']:,} users x {sd['advertisers']} advertisers x {sd['days']} days from 20 October "
                      f"(`preset = \"singles_day\"`, half the advertisers bid up for it), end to end: "
                      f"{sd['wall_s']:,.1f} s wall, {sd['cpu_s']:,.1f} CPU s ({fmt(sd['sessions'])} auctions, "
                      f"{fmt(sd['impressions'])} impressions; Market.run {fmt(sd.get('simulate_s'), 1)} s, writing "
                      f"{fmt(sd.get('write_s'), 1)} s), peak RSS {sd['peak_rss_mb'] / 1024:.2f} GB.", ""]
    if res.get("skipped"):
        lines += ["## Skipped points", ""] + [f"- {s}" for s in res["skipped"]] + [""]
    if res.get("added_points"):
        lines += ["## Points measured after the suite", "",
                  "A point that failed or was skipped inside the time budget, measured right after it with "
                  "`python benchmarks/run.py --render benchmarks/results.json --add-point USERS ADVERTISERS DAYS` "
                  "(or `--add-singles-day`), with a longer `--point-timeout`:", ""]
        lines += [f"- {s}" for s in res["added_points"]] + [""]
    lines += [
        "## Reference points",
        "",
        "- **Python reference** (`benchmarks/reference.py`, `ReferenceMarket`): the auction as a first Mesa model "
        "would have it. Each advertiser is a `mesa.Agent`; for every session each agent computes its Ad Rank in "
        "Python (`bid x multiplier x rate(user) x QS / 10`), the model sorts them and charges the generalized second "
        "price `bid x m x max(next rank, floor) / own rank`. Only the auction: no eligibility, budgets or users' "
        "responses, so it is faster than a whole per-session Python engine would be (the ratio to it is a lower "
        "bound); `tests/test_benchmarks.py` checks that it picks the same winners at the same prices as "
        "`simulator.auction` and the engine's rank kernel.",
        "- **numpy kernel** (`topk_kernel`): given a (sessions x advertisers) matrix of predicted rates, multiply by each "
        "ad's `bid x m x QS / 10` and take each session's top slots plus the first loser, in the engine's chunk size. "
        "Two ways: `argpartition` then a sort of the survivors (the issue's kernel, used for the target) and "
        "`k` passes of a row-wise `argmax` (faster for a handful of slots: a tighter bound).",
        "",
    ]
    return "\n".join(lines)


def _budget() -> str:
    from benchmarks.scenarios import BUDGET_PER_USER_DAY

    return f"{BUDGET_PER_USER_DAY:g}"


def _verdict(res: dict[str, Any], axis: str, key: str) -> str:
    """One sentence on how time and memory grow along the axis (from the first and last measured points)."""
    pts = sorted(_ok(res.get(axis)), key=lambda p: p[key])
    if len(pts) < 2:
        return "Too few points measured for a verdict."
    a, b = pts[0], pts[-1]
    grow = b[key] / a[key]
    t = b["simulate_cpu_s"] / max(a["simulate_cpu_s"], 1e-9)
    s = b["sessions"] / max(a["sessions"], 1)
    per = b["per_auction_cpu_us"] / max(a["per_auction_cpu_us"], 1e-9)
    mem = b["peak_rss_mb"] / max(a["peak_rss_mb"], 1e-9)
    return (f"From {fmt(a[key])} to {fmt(b[key])} {key} (x{grow:,.0f}): sessions x{s:,.1f}, Market.run CPU time "
            f"x{t:,.1f}, CPU time per auction x{per:.2f}, peak RSS x{mem:.2f}.")


def findings(res: dict[str, Any]) -> list[str]:
    """Plain statements computed from the measurements (no judgement beyond arithmetic)."""
    out = []
    e2e = res.get("e2e")
    if e2e and e2e.get("simulate_s"):
        rest = e2e["wall_s"] - e2e["simulate_s"]
        out.append(
            f"End to end, `Market.run` is {100 * e2e['simulate_s'] / e2e['wall_s']:.0f} % of the CLI's wall time; the other "
            f"{rest:,.1f} s are interpreter start and imports, setup ({fmt(e2e.get('setup_s'), 1)} s) and writing the run "
            f"folder ({fmt(e2e.get('write_s'), 1)} s, with report.png)."
        )
    p = res.get("parts")
    if p:
        top = sorted(p["rows"], key=lambda r: -r["cpu_s"])[:3]
        out.append("Largest parts by CPU time: " + "; ".join(f"{r['part']} {100 * r['cpu_s'] / p['cpu_s']:.0f} %" for r in top) + ".")
    npath = _ok(res.get("numpy_path"))
    fused = {q["advertisers"]: q for q in _ok(res.get("ads_axis"))}
    for q in npath:
        f = fused.get(q["advertisers"])
        if f:
            out.append(
                f"At {q['users']:,} users x {q['advertisers']} advertisers the engine's numpy path (`ADSIM_NUMBA=0`) is "
                f"{f['auctions_per_cpu_s'] / q['auctions_per_cpu_s']:,.0f} x slower than the default path per CPU second and "
                f"{f['auctions_per_s'] / q['auctions_per_s']:,.0f} x per wall second ({q['auctions_per_s']:,.0f} auctions/s: "
                "the reference path, piece by piece between re-auctions)."
            )
    users, ads, days = res["config"]["headline"]
    refs = res.get("references", {})
    py, k, km = refs.get(f"python_{ads}"), refs.get(f"kernel_argpartition_{ads}"), refs.get(f"kernel_argmax_{ads}")
    if py and k and km:
        out.append(
            f"The bare numpy kernel itself runs {k['auctions_per_cpu_s'] / py['auctions_per_cpu_s']:,.0f} x (argpartition) and "
            f"{km['auctions_per_cpu_s'] / py['auctions_per_cpu_s']:,.0f} x (argmax) the Python reference's auctions per CPU "
            f"second at {ads} advertisers; the engine does the kernel's work and more."
        )
    axis = sorted(_ok(res.get("ads_axis")), key=lambda q: q["advertisers"])
    if len(axis) >= 2:
        a, b = axis[0], axis[-1]
        out.append(
            f"Per-auction CPU cost from {a['advertisers']} to {b['advertisers']:,} advertisers: "
            f"{a['per_auction_cpu_us']:.1f} to {b['per_auction_cpu_us']:.1f} µs (x{b['per_auction_cpu_us'] / a['per_auction_cpu_us']:.1f} "
            f"for x{b['advertisers'] / a['advertisers']:,.0f} advertisers)."
        )
    return out
