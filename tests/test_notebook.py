"""``notebooks/tour.ipynb`` runs end to end (nbclient, the python3 kernel of this interpreter), so it cannot rot.

The notebook tours ``captures/demo.pcap`` or the first capture in ``captures/``; when the repository
has none yet, the test writes a synthetic one (scapy) and points the notebook at it through
``TCP_ANALYZER_CAPTURE``. Images go to a temporary folder (``TCP_ANALYZER_OUT``).
"""
from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat not installed (pip install -e '.[dev]')")
nbclient = pytest.importorskip("nbclient", reason="nbclient not installed (pip install -e '.[dev]')")
pytest.importorskip("ipykernel", reason="ipykernel not installed (pip install -e '.[dev]')")

from .synthetic_tcp import lossy_upload  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "tour.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "clear the outputs before committing"


@pytest.mark.timeout(300)
def test_notebook_runs_end_to_end(tmp_path, monkeypatch):
    if not any((ROOT / "captures").glob("*.pcap*")):
        capture = tmp_path / "lossy.pcap"
        lossy_upload(capture, captured_twice=True, streams=2)
        monkeypatch.setenv("TCP_ANALYZER_CAPTURE", str(capture))
    monkeypatch.setenv("TCP_ANALYZER_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=240,
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any failure
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2, "the time-sequence graph and the RTT plot"
    assert (tmp_path / "out" / "rtt.png").exists()
    assert list((tmp_path / "out").glob("stream*.png"))
