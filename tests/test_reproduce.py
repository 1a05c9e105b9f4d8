"""`kimi-mini reproduce`, the claims it collects, and the report it writes."""

import json
import re
import subprocess
import sys

import nbformat
import pytest

from kimi_mini.cli import main
from kimi_mini.presets import get_preset
from kimi_mini.report import load_claims, record_claim, write_report


def _notebook(path, *cells):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('PRESET = "toy"\nRUN_DIR = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params] + [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_unknown_preset_exits_2_with_one_helpful_line(capsys):
    assert main(["reproduce", "--preset", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "toy" in err and "gpu" in err


def test_unknown_notebook_exits_2(capsys):
    assert main(["reproduce", "--only", "99"]) == 2
    assert "99" in capsys.readouterr().err


def test_get_preset_lists_valid_names():
    assert get_preset("toy").device == "cpu"
    with pytest.raises(ValueError, match="toy"):
        get_preset("tiny")
    assert get_preset("gpu").pick(toy=1, gpu=2) == 2
    with pytest.raises(ValueError, match="missing"):
        get_preset("toy").pick(toy=1)


def test_record_claim_validates_and_appends_json(tmp_path, capsys):
    c = record_claim("loss falls", "yes", "1.9 < 3.2", True, "measured", paper="P", notebook="00_x", run_dir=tmp_path)
    record_claim("second", "x", "y", None, "toy scale cannot show it", paper="P", notebook="00_x", run_dir=tmp_path)
    assert [d["claim"] for d in json.loads((tmp_path / "claims" / "00_x.json").read_text())] == ["loss falls", "second"]
    assert c.verdict == "yes" and "loss falls" in capsys.readouterr().out
    with pytest.raises(ValueError, match="holds"):
        record_claim("c", "p", "o", "yes", "e", paper="P", run_dir=tmp_path)
    with pytest.raises(ValueError, match="ours"):
        record_claim("c", "p", "", True, "e", paper="P", run_dir=tmp_path)


def test_report_has_a_row_per_claim_and_a_summary(tmp_path):
    record_claim("a | b", "1", "2", True, "e1", paper="P1", notebook="00_a", run_dir=tmp_path)
    record_claim("c", "3", "4", False, "e2", paper="P2", notebook="01_b", run_dir=tmp_path)
    text = write_report(tmp_path, "toy", [{"notebook": "00_a", "seconds": 3.0, "ok": True, "error": None},
                                          {"notebook": "01_b", "seconds": 5.0, "ok": False, "error": "cell [2]: E"}]
                        ).read_text()
    assert "| P1 | a \\| b | 1 | 2 | yes | 00_a | 3 |" in text
    assert "| P2 | c | 3 | 4 | no | 01_b | 5 |" in text
    assert "2 claims — 1 hold, 1 do not, 0 not testable" in text and "1 failed" in text
    assert len(load_claims(tmp_path)) == 2


@pytest.mark.notebook
def test_a_failing_notebook_is_reported_and_the_others_still_run(tmp_path):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _notebook(nbdir / "00_bad.ipynb", "x = 1", "raise RuntimeError('boom at step 3')")
    _notebook(nbdir / "01_good.ipynb",
              "from kimi_mini.notebooks import start_notebook\nnb = start_notebook('01_good', PRESET, RUN_DIR)",
              "nb.record_claim('c', 'p', 'o', True, 'e', paper='P')")
    proc = subprocess.run([sys.executable, "-m", "kimi_mini.cli", "reproduce", "--notebooks", str(nbdir),
                           "--out", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    report = (tmp_path / "runs" / "toy" / "REPORT.md").read_text()
    # the cell number is the executed copy's execution count (papermill adds its parameters cell)
    assert re.search(r"FAILED: cell \[\d+\]: RuntimeError: boom at step 3", report)
    assert "| 01_good | ok |" in report and "| P | c | p | o | yes | 01_good |" in report
    assert (tmp_path / "runs" / "toy" / "01_good.ipynb").exists()
