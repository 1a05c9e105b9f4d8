"""`kimi-mini reproduce`, the claims it collects, and the report it writes."""

import json
import re
import statistics
import subprocess
import sys

import nbformat
import pytest

from kimi_mini.cli import main, run_folder
from kimi_mini.notebooks import notebook_parameters
from kimi_mini.presets import get_preset
from kimi_mini.report import (
    Evidence,
    Precondition,
    compare_runs,
    load_claims,
    record_check,
    record_claim,
    t_quantile,
    write_report,
)


def _notebook(path, *cells, params='PRESET = "toy"\nRUN_DIR = None'):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(params)
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


EV_YES = Evidence.mean([1.0, 1.1, 0.9])  # 1.0 ± 0.25: wholly above 0


def test_record_claim_validates_and_appends_json(tmp_path, capsys):
    c = record_claim("loss falls", "yes", "1.9 < 3.2", evidence=EV_YES, precondition="none", explanation="measured",
                     paper="P", notebook="00_x", run_dir=tmp_path)
    record_check("second", "x", "y", False, "an identity", paper="P", notebook="00_x", run_dir=tmp_path)
    rows = json.loads((tmp_path / "claims" / "00_x.json").read_text())
    assert [(d["claim"], d["verdict"]) for d in rows] == [("loss falls", "yes"), ("second", "check: fail")]
    assert c.verdict == "yes" and c.holds is True and "loss falls" in capsys.readouterr().out
    with pytest.raises(ValueError, match="ours"):
        record_claim("c", "p", "", evidence=EV_YES, precondition="none", explanation="e", paper="P")
    with pytest.raises(ValueError, match="precondition"):
        record_claim("c", "p", "o", evidence=EV_YES, precondition="", explanation="e", paper="P")


@pytest.mark.parametrize("values, threshold, direction, verdict", [
    ([1.0, 1.1, 0.9], 0.0, "above", "yes"),        # 1.0 ± 4.30·0.058 = [0.75, 1.25] > 0
    ([1.0, 1.1, 0.9], 2.0, "above", "no"),         # wholly below 2
    ([0.1, 0.5, -0.2], 0.0, "above", "inconclusive"),
    ([1.0, 1.1, 0.9], 2.0, "below", "yes"),
    ([1.0, 1.1, 0.9], 0.0, "below", "no"),
], ids=["clears", "misses", "straddles", "below-clears", "below-misses"])
def test_four_verdicts_follow_the_95_percent_interval(values, threshold, direction, verdict):
    ev = Evidence.mean(values, threshold=threshold, direction=direction)
    assert ev.verdict == verdict
    assert ev.margin == pytest.approx(4.303 * statistics.stdev(values) / 3 ** 0.5)


def test_t_quantile_and_binomial_interval():
    assert t_quantile(2) == 4.303 and t_quantile(1000) == pytest.approx(1.962, abs=0.002)
    ev = Evidence.proportion(60, 100, threshold=0.5)  # 0.6 ± 1.96·0.049 = [0.504, 0.696]
    assert ev.verdict == "yes" and ev.margin == pytest.approx(1.96 * (0.24 / 100) ** 0.5)
    assert Evidence.proportion(55, 100, threshold=0.5).verdict == "inconclusive"
    # 55 % at n = 100 straddles 0.5; ≈ 380 examples put 1.96·SE under the 0.05 gap
    assert 370 <= Evidence.proportion(55, 100, threshold=0.5).units_to_resolve() <= 390


def test_unmet_precondition_and_parts_decide_the_verdict(capsys):
    unmet = Precondition("the baseline fails", "0.50 vs 0.5", met=False)
    assert record_claim("c", "p", "o", evidence=EV_YES, precondition=unmet, explanation="e", paper="P").verdict \
        == "n/a: precondition unmet"
    no = Evidence.mean([1.0, 1.1, 0.9], threshold=2.0)
    open_ = Evidence.mean([0.1, 0.5, -0.2])
    both = record_claim("c", "p", "o", evidence=[EV_YES, open_], precondition="none", explanation="e", paper="P")
    assert both.verdict == "inconclusive" and "seeds at the measured spread" in both.to_resolve
    assert record_claim("c", "p", "o", evidence=[open_, no], precondition="none", explanation="e",
                        paper="P").verdict == "no"
    assert "n/a: precondition unmet" in capsys.readouterr().out


def _two_runs(tmp_path):
    a, b = tmp_path / "toy", tmp_path / "toy-seeds-3-4-5"
    flat = Evidence.mean([0.1, 0.5, -0.2])
    for run, (v1, v2) in ((a, (EV_YES, EV_YES)), (b, (Evidence.mean([1.0, 1.1, 0.9], threshold=2.0), flat))):
        record_claim("one", "p", "o", evidence=v1, precondition="none", explanation="e", paper="P", notebook="01_a",
                     run_dir=run)
        record_claim("two", "p", "o", evidence=v2, precondition="none", explanation="e", paper="P", notebook="01_a",
                     run_dir=run)
        record_check("three", "p", "o", True, "e", paper="P", notebook="02_b", run_dir=run)
    return a, b


def test_compare_marks_flips_and_changes(tmp_path, capsys):
    a, b = _two_runs(tmp_path)
    rows = {r["claim"]: r["change"] for r in compare_runs(a, b)}
    assert rows == {"one": "FLIP", "two": "changed", "three": "stable"}
    assert main(["report", "compare", str(a), str(b), "--write", str(tmp_path / "cmp.md")]) == 1  # a flip
    out = capsys.readouterr().out
    assert "**FLIP**" in out and "1 flipped yes ↔ no" in out and (tmp_path / "cmp.md").exists()
    text = write_report(a, "toy", [{"notebook": "01_a", "seconds": 1.0, "ok": True, "error": None}],
                        compare_with=b).read_text()
    assert "stable? |" in text and "| FLIP |" in text and "1 flipped yes ↔ no" in text
    assert main(["report", "compare", str(a), str(tmp_path / "nothing")]) == 2


def test_report_has_a_row_per_claim_and_a_summary(tmp_path):
    pre = Precondition("model above chance", "0.7 ± 0.1 vs 0.5", met=True)
    record_claim("a | b", "1", "2", evidence=EV_YES, precondition=pre, explanation="e1", paper="P1", notebook="00_a",
                 run_dir=tmp_path)
    record_check("c", "3", "4", False, "e2", paper="P2", notebook="01_b", run_dir=tmp_path)
    text = write_report(tmp_path, "toy", [{"notebook": "00_a", "seconds": 3.0, "ok": True, "error": None},
                                          {"notebook": "01_b", "seconds": 5.0, "ok": False, "error": "cell [2]: E"}]
                        ).read_text()
    assert "| P1 | a \\| b | 1 | 2 | model above chance: 0.7 ± 0.1 vs 0.5 (met) |" in text
    assert "| yes | 00_a | 3 |" in text and "| check: fail | 01_b | 5 |" in text
    assert "2 claims — 1 yes, 0 no, 0 inconclusive, 0 n/a (precondition unmet), 0 checks passed, 1 checks failed" \
        in text and "1 failed" in text
    assert len(load_claims(tmp_path)) == 2


def test_seeds_reach_notebooks_that_take_them(tmp_path):
    nb_path = tmp_path / "01_x.ipynb"
    _notebook(nb_path, "x = 1")
    assert notebook_parameters(nb_path) == {"PRESET", "RUN_DIR"}
    _notebook(nb_path, "x = 1", params='PRESET = "toy"\nRUN_DIR = None\nSEEDS = (0, 1, 2)')
    assert notebook_parameters(nb_path) == {"PRESET", "RUN_DIR", "SEEDS"}
    assert run_folder("runs", "toy", None).name == "toy" and run_folder("runs", "toy", (3, 4, 5)).name == \
        "toy-seeds-3-4-5"
    assert main(["reproduce", "--seeds", "3,3"]) == 2 and main(["reproduce", "--seeds", "a"]) == 2


@pytest.mark.notebook
def test_a_failing_notebook_is_reported_and_the_others_still_run(tmp_path):
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    _notebook(nbdir / "00_bad.ipynb", "x = 1", "raise RuntimeError('boom at step 3')")
    _notebook(nbdir / "01_good.ipynb",
              "from kimi_mini.notebooks import start_notebook\nnb = start_notebook('01_good', PRESET, RUN_DIR)",
              "nb.record_check('c', 'p', 'o', True, 'e', paper='P')")
    proc = subprocess.run([sys.executable, "-m", "kimi_mini.cli", "reproduce", "--notebooks", str(nbdir),
                           "--out", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    report = (tmp_path / "runs" / "toy" / "REPORT.md").read_text()
    # the cell number is the executed copy's execution count (papermill adds its parameters cell)
    assert re.search(r"FAILED: cell \[\d+\]: RuntimeError: boom at step 3", report)
    assert "| 01_good | ok |" in report and "| check: pass | 01_good |" in report
    assert (tmp_path / "runs" / "toy" / "01_good.ipynb").exists()
