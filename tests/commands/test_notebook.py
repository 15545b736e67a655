"""Runs notebooks/explore_drsan.ipynb top to bottom, as a reader would, in a fresh kernel."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "explore_drsan.ipynb"


def test_notebook_is_stored_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def _run(shared_data, monkeypatch, checkpoint):
    if checkpoint is None:
        monkeypatch.delenv("DRSAN_CHECKPOINT", raising=False)
    else:
        monkeypatch.setenv("DRSAN_CHECKPOINT", checkpoint)
    monkeypatch.setenv("DRSAN_DATA_DIR", str(shared_data))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.outputs]
    figures = [output for output in outputs if "image/png" in output.get("data", {})]
    return figures, "".join(output.get("text", "") for output in outputs)


@pytest.mark.slow
def test_notebook_runs_as_docs_say_and_draws_every_figure(shared_data, tmp_path):
    # The command of docs/notebook.md, headless: `jupyter nbconvert --execute` (the `dev`
    # extra has nbconvert; `notebook` has Jupyter itself). Without DRSAN_CHECKPOINT the
    # notebook looks at the shipped 32s-x2.
    env = {k: v for k, v in os.environ.items() if k != "DRSAN_CHECKPOINT"}
    env.update(DRSAN_DATA_DIR=str(shared_data),
               MPLBACKEND="module://matplotlib_inline.backend_inline")
    output = tmp_path / "explored.ipynb"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("jupyter")), "nbconvert", "--to", "notebook",
         "--execute", str(NOTEBOOK), "--output", str(output)],
        env=env, capture_output=True, text=True, timeout=600, cwd=NOTEBOOK.parents[1])
    assert result.returncode == 0, result.stderr[-3000:]
    notebook = nbformat.read(output, as_version=4)
    figures = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs
               if "image/png" in o.get("data", {})]
    assert len(figures) == 6
    text = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for o in cell.outputs)
    # The successors' section found every released file it names and scored each.
    for family in ("smfanet ", "span ", "safmn-ntire "):
        assert family in text, text[-2000:]
    assert "is not there; left out" not in text


@pytest.mark.slow
def test_notebook_takes_a_model_of_another_family(shared_data, monkeypatch):
    # LESRCNN from its authors' released weights: the comparison figure, and a note in place of
    # the DRA and RSA sections, which it has nothing for; the successors' section stays.
    lesrcnn = shared_data / "weights" / "lesrcnn" / "lesrcnn_x2.pth"
    figures, text = _run(shared_data, monkeypatch, str(lesrcnn))
    assert len(figures) == 2
    assert "lesrcnn has no dynamic residual module" in text
    assert "lesrcnn has no residual self-attention" in text
