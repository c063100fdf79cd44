"""Every notebook in notebooks/ executes top to bottom at smoke scale, and its outputs include figures.

The notebooks are stored without outputs; this test is what keeps them from rotting.
``ADSIM_SMOKE=1`` shrinks each to seconds; the kernels run numba single-threaded
(``NUMBA_NUM_THREADS=1``): smoke runs are too small to gain from threads, and
threads oversubscribe a shared CI machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there() -> None:
    names = [p.stem for p in NOTEBOOKS]
    for stem in ("01_quickstart", "02_singles_day", "03_quality_score", "04_pacing_and_dayparting", "05_batch_analysis"):
        assert stem in names


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADSIM_SMOKE", "1")
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "store notebooks without outputs"
    assert any(c.cell_type == "markdown" for c in nb.cells[1:]), "a notebook tells its story in prose"
    assert any("SMOKE" in c.source for c in nb.cells if c.cell_type == "code")
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, f"{path.name}: expected figures among the outputs, got {len(images)}"
    smoke = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "stream" and "SMOKE" in o.get("text", "")]
    assert smoke, "the notebook did not pick up ADSIM_SMOKE"
