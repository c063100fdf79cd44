from simulator import run
from tests.conftest import make_scenario


def test_small_market_runs_and_fills_slots():
    result = run(make_scenario())
    daily = result.advertiser_daily
    assert len(daily) == 2 * 3
    assert daily["impressions"].sum() > 0
    assert result.market_daily["sessions"].gt(0).all()
