"""examples/quickstart.ipynb: stored without outputs, and runs top to bottom in a real kernel."""

import os
import re

import pytest
from conftest import ROOT

NOTEBOOK = os.path.join(ROOT, "examples", "quickstart.ipynb")


def test_notebook_is_stored_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
    assert "widgets" not in notebook.metadata


def test_notebook_runs_top_to_bottom(data_dir, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("IMGCLS_DATA_DIR", data_dir)
    # The kernel imports this checkout's imgcls, whatever the venv's editable install points at.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}},  # as Jupyter opens it
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on failure

    def text(cell):
        parts = []
        for out in cell.outputs:
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
            parts.append(out.get("data", {}).get("text/markdown", ""))
        return "".join(parts)

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    images = [out for cell in code for out in cell.outputs if "image/png" in out.get("data", {})]
    assert len(images) == 4  # confusion matrix, learning curves, Grad-CAM, sweep results
    everything = "\n".join(text(cell) for cell in code)
    accuracy = re.search(r"test at step \d+ \(best checkpoint\): accuracy ([0-9.]+)", everything)
    assert accuracy and float(accuracy.group(1)) > 0.8, everything[-3000:]
    predicted = re.findall(r"digit\d+_is_(\d)\.png\s+(\d)", everything)
    assert len(predicted) == 6 and sum(a == b for a, b in predicted) >= 5, everything[-3000:]
    assert "# Sweep results: 4 trials ranked by best_eval_accuracy (max); 4 done" in everything
    assert everything.count("done: optimizer.learning_rate=") == 4
