"""Claims and the reproduction report.

A notebook calls :func:`record_claim` for each paper claim it reproduces. When papermill runs it
(``kimi-mini reproduce``), the claim is appended as JSON to ``<run dir>/claims/<notebook>.json``; the
runner then folds every claim into ``<run dir>/REPORT.md``. Run interactively (no run dir), the claim
is only printed. ``holds`` is True / False, or None when the toy scale cannot show the effect — the
explanation then says so.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Claim", "record_claim", "set_run", "load_claims", "write_report", "safe_name"]

_ACTIVE: dict[str, object] = {"run_dir": None, "notebook": None}


@dataclass
class Claim:
    paper: str
    claim: str
    paper_value: str
    ours: str
    holds: bool | None
    explanation: str
    notebook: str | None = None

    @property
    def verdict(self) -> str:
        return {True: "yes", False: "no", None: "n/a at this scale"}[self.holds]


def set_run(run_dir: str | Path | None, notebook: str | None) -> None:
    """Where claims go from now on (``start_notebook`` calls this)."""
    _ACTIVE["run_dir"] = Path(run_dir) if run_dir else None
    _ACTIVE["notebook"] = notebook


def record_claim(claim: str, paper_value: str, ours: str, holds: bool | None, explanation: str, *,
                 paper: str, notebook: str | None = None, run_dir: str | Path | None = None) -> Claim:
    """Record one reproduced claim: what the paper says (``paper_value``), what we measured this run
    (``ours``), whether it holds at this scale, and one line of explanation."""
    for name, value in (("claim", claim), ("paper_value", paper_value), ("ours", ours),
                        ("explanation", explanation), ("paper", paper)):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name}: expected a non-empty string, got {value!r}")
    if notebook is not None:
        safe_name(notebook)  # a clear error for an empty or non-string name
    if holds not in (True, False, None):
        raise ValueError(f"holds: expected True, False or None (not testable at this scale), got {holds!r}")
    c = Claim(paper, claim, paper_value, ours, None if holds is None else bool(holds), explanation,
              notebook or _ACTIVE["notebook"])
    out_dir = Path(run_dir) if run_dir else _ACTIVE["run_dir"]
    if out_dir is not None:
        path = Path(out_dir) / "claims" / f"{safe_name(c.notebook or 'unnamed')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        existing = json.loads(path.read_text()) if path.exists() else []
        existing.append(dataclasses.asdict(c))
        path.write_text(json.dumps(existing, indent=2))
    mark = {True: "✓ holds", False: "✗ does not hold", None: "– n/a at this scale"}[c.holds]
    print(f"[claim] {claim}\n        paper: {paper_value} | ours: {ours} | {mark}\n        {explanation}")
    return c


def safe_name(name: str) -> str:
    """A file name that stays inside its folder: letters, digits, ``-``, ``_`` and ``.`` only, no leading dot
    (``"../escaped"`` → ``"escaped"``)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"notebook: expected a non-empty name, got {name!r}")
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    if not re.search(r"[A-Za-z0-9]", cleaned):
        raise ValueError(f"notebook: expected a name with letters or digits, got {name!r}")
    return cleaned[:120]


def load_claims(run_dir: str | Path) -> list[Claim]:
    claims = []
    for path in sorted((Path(run_dir) / "claims").glob("*.json")):
        claims.extend(Claim(**d) for d in json.loads(path.read_text()))
    return claims


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_report(run_dir: str | Path, preset: str, results: list[dict]) -> Path:
    """Write ``REPORT.md``: one row per claim, then the notebooks' status and a summary line.

    ``results``: one dict per notebook run: ``notebook``, ``seconds``, ``ok``, ``error`` (or None).
    """
    run_dir = Path(run_dir)
    claims = load_claims(run_dir)
    seconds = {r["notebook"]: r["seconds"] for r in results}
    lines = [
        f"# kimi-mini reproduction report — preset `{preset}`",
        "",
        "Every figure in the *ours* column was measured by the notebook in this run.",
        "",
        "| paper | claim | paper's figure | ours | holds? | notebook | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        lines.append(f"| {_cell(c.paper)} | {_cell(c.claim)} | {_cell(c.paper_value)} | {_cell(c.ours)} | "
                     f"{c.verdict} | {_cell(c.notebook)} | {seconds.get(c.notebook, float('nan')):.0f} |")
    lines += ["", "## Why each verdict", ""]
    lines += [f"- **{_cell(c.notebook)}** — {_cell(c.claim)}: {_cell(c.explanation)}" for c in claims]
    lines += ["", "## Notebooks", "", "| notebook | status | seconds |", "|---|---|---|"]
    for r in results:
        status = "ok" if r["ok"] else f"FAILED: {_cell(r.get('error'))}"
        lines.append(f"| {r['notebook']} | {status} | {r['seconds']:.0f} |")
    n_yes = sum(c.holds is True for c in claims)
    n_no = sum(c.holds is False for c in claims)
    n_na = sum(c.holds is None for c in claims)
    n_fail = sum(not r["ok"] for r in results)
    total = sum(r["seconds"] for r in results)
    lines += ["", f"**Summary:** {len(claims)} claims — {n_yes} hold, {n_no} do not, {n_na} not testable at "
              f"this scale; {len(results) - n_fail}/{len(results)} notebooks ran ({n_fail} failed) "
              f"in {total:.0f} s.", ""]
    path = run_dir / "REPORT.md"
    path.write_text("\n".join(lines))
    return path
