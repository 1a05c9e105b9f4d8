"""Claims and the reproduction report.

A notebook calls :func:`record_claim` for each paper claim it reproduces. Each claim states, before it is
measured, its **rule** (what "holds" means: an estimate, its uncertainty, a threshold) and its
**precondition** (what must be true for the test to mean anything), and gets one of four verdicts:

- ``yes`` — the estimate clears the threshold by more than its uncertainty (the whole interval is on the
  claimed side);
- ``no`` — it misses by more than its uncertainty (the whole interval is on the other side);
- ``inconclusive`` — the interval straddles the threshold (the claim says how many seeds or examples would
  resolve it at the measured spread);
- ``n/a: precondition unmet`` — the precondition's measured value says the test means nothing here.

A claim that holds by construction is no finding: record it as a labelled **check** (``check: pass`` /
``check: fail``).

The interval is ``estimate ± c·SE``: over seeds, SE is the standard error of the mean of paired per-seed
values and ``c`` Student's t quantile for a two-sided 95 % interval with n − 1 degrees of freedom (4.30 for
3 seeds — few seeds are honest about how little they know); over evaluation examples, SE is the binomial
standard error and ``c`` = 1.96.

When papermill runs a notebook (``kimi-mini reproduce``), each claim is appended as JSON to
``<run dir>/claims/<notebook>.json``; the runner then folds every claim into ``<run dir>/REPORT.md``.
:func:`compare_runs` sets two runs (two seed sets) side by side. Run interactively (no run dir), a claim is
only printed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Evidence", "Precondition", "Claim", "VERDICTS", "record_claim", "record_check", "set_run",
           "load_claims", "write_report", "compare_runs", "format_comparison", "safe_name", "t_quantile"]

_ACTIVE: dict[str, object] = {"run_dir": None, "notebook": None, "seeds": None}

YES, NO, INCONCLUSIVE, UNMET = "yes", "no", "inconclusive", "n/a: precondition unmet"
CHECK_PASS, CHECK_FAIL = "check: pass", "check: fail"
VERDICTS = (YES, NO, INCONCLUSIVE, UNMET, CHECK_PASS, CHECK_FAIL)

# Two-sided 95 % quantiles of Student's t by degrees of freedom (no scipy at import time).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 25: 2.060, 30: 2.042}


def t_quantile(df: int) -> float:
    """The two-sided 95 % quantile of Student's t with ``df`` degrees of freedom (1.96 as df → ∞)."""
    if not isinstance(df, int) or df < 1:
        raise ValueError(f"df: expected a positive integer, got {df!r}")
    if df in _T95:
        return _T95[df]
    if df < 30:  # between table rows: the next smaller df's (larger, so conservative) quantile
        return _T95[max(k for k in _T95 if k < df)]
    return 1.96 + 2.4 / df  # within 0.002 of the exact quantile from df = 30 on


def _finite(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a finite number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return v


@dataclass(frozen=True)
class Evidence:
    """A measured estimate, its standard error and the threshold the claim puts it against.

    ``direction="above"``: the claim says the estimate exceeds ``threshold``; ``"below"``: it stays under it.
    ``n`` is how many independent units the SE comes from, ``unit`` what they are (``"seeds"``: the interval
    uses Student's t with n − 1 degrees of freedom, as does ``"rounds"`` for repeated timings; ``"examples"``:
    the normal 1.96). ``scale`` and ``fmt``
    only change how the numbers print (``scale=100, fmt="+.1f", suffix=" points"``).
    Build it with :meth:`paired`, :meth:`mean` or :meth:`proportion` rather than by hand.
    """

    estimate: float
    se: float
    n: int
    unit: str = "seeds"
    threshold: float = 0.0
    direction: str = "above"
    what: str = ""
    scale: float = 1.0
    fmt: str = "+.3f"
    suffix: str = ""

    def __post_init__(self):
        _finite("estimate", self.estimate)
        if _finite("se", self.se) < 0:
            raise ValueError(f"se: expected a standard error ≥ 0, got {self.se!r}")
        _finite("threshold", self.threshold)
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n: expected a positive number of seeds or examples, got {self.n!r}")
        if self.unit not in ("seeds", "rounds", "examples"):
            raise ValueError(f"unit: expected 'seeds', 'rounds' or 'examples', got {self.unit!r}")
        if self.unit != "examples" and self.n < 2:
            raise ValueError(f"n: a standard error over {self.unit} needs at least 2 of them, got {self.n}")
        if self.direction not in ("above", "below"):
            raise ValueError(f"direction: expected 'above' or 'below', got {self.direction!r}")

    # --- constructors ---------------------------------------------------------------------------------------
    @classmethod
    def mean(cls, values: Sequence[float], *, threshold: float = 0.0, direction: str = "above", what: str = "",
             unit: str = "seeds", **style) -> Evidence:
        """The mean of per-seed ``values`` (one number per seed; ``unit="rounds"`` for repeated timings)
        against ``threshold``."""
        vals = [_finite("values", v) for v in values]
        if len(vals) < 2:
            raise ValueError(f"values: expected one value per seed for at least 2 seeds, got {len(vals)}")
        m = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))
        return cls(m, sd / math.sqrt(len(vals)), len(vals), unit, threshold, direction, what, **style)

    @classmethod
    def paired(cls, a: Sequence[float], b: Sequence[float], *, threshold: float = 0.0, direction: str = "above",
               what: str = "", **style) -> Evidence:
        """The mean over seeds of the paired differences ``a[i] - b[i]`` (same seed, same data)."""
        if len(a) != len(b):
            raise ValueError(f"b: expected one value per seed of a ({len(a)}), got {len(b)}")
        return cls.mean([_finite("a", x) - _finite("b", y) for x, y in zip(a, b, strict=True)],
                        threshold=threshold, direction=direction, what=what or "paired difference", **style)

    @classmethod
    def proportion(cls, successes: int, n: int, *, threshold: float = 0.5, direction: str = "above",
                   what: str = "", **style) -> Evidence:
        """An accuracy (``successes`` of ``n`` evaluation examples) against ``threshold``, binomial SE."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: expected a positive number of examples, got {n!r}")
        if not isinstance(successes, int) or not 0 <= successes <= n:
            raise ValueError(f"successes: expected an integer in [0, {n}], got {successes!r}")
        p = successes / n
        return cls(p, math.sqrt(max(p * (1 - p), 1e-12) / n), n, "examples", threshold, direction,
                   what or "accuracy", **style)

    # --- the verdict ----------------------------------------------------------------------------------------
    @property
    def critical(self) -> float:
        return 1.96 if self.unit == "examples" else t_quantile(self.n - 1)

    @property
    def margin(self) -> float:
        """Half-width of the 95 % interval."""
        return self.critical * self.se

    @property
    def verdict(self) -> str:
        lo, hi = self.estimate - self.margin, self.estimate + self.margin
        if self.direction == "above":
            return YES if lo > self.threshold else NO if hi < self.threshold else INCONCLUSIVE
        return YES if hi < self.threshold else NO if lo > self.threshold else INCONCLUSIVE

    def units_to_resolve(self) -> int | None:
        """How many seeds (or examples) would put the interval clear of the threshold at the measured spread
        and estimate; None when the estimate sits on the threshold (no number of them would)."""
        gap = abs(self.estimate - self.threshold)
        sd = self.se * math.sqrt(self.n)
        if gap == 0:
            return None
        if sd == 0:
            return self.n
        if self.unit != "examples":  # Student's t shrinks as n grows: walk n up to where the table ends
            for n in range(max(self.n, 2), 31):
                if t_quantile(n - 1) * sd / math.sqrt(n) < gap:
                    return n
        return max(self.n, math.floor((1.96 * sd / gap) ** 2) + 1)

    def describe(self) -> str:
        """``+2.4 ± 3.5 points (paired difference, 3 seeds, 95 % interval) vs > 0``."""
        s = self.scale
        sign = ">" if self.direction == "above" else "<"
        est = format(self.estimate * s, self.fmt)
        half = format(self.margin * s, self.fmt.lstrip("+"))
        thr = format(self.threshold * s, self.fmt.lstrip("+"))
        what = f"{self.what}, " if self.what else ""
        return f"{est} ± {half}{self.suffix} ({what}{self.n} {self.unit}, 95 % interval) vs {sign} {thr}"


@dataclass(frozen=True)
class Precondition:
    """What must be true for a claim's test to mean anything, fixed before measuring, with its measured value.

    ``Precondition("the baseline is above chance by > 2 SE", measured="0.61 ± 0.02 vs 0.5", met=True)``, or
    from evidence: ``Precondition.from_evidence("the model is above chance", ev)`` (met when ``ev`` says yes).
    """

    text: str
    measured: str
    met: bool

    def __post_init__(self):
        for name in ("text", "measured"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name}: expected a non-empty string, got {value!r}")
        if not isinstance(self.met, bool):
            raise ValueError(f"met: expected True or False, got {self.met!r}")

    @classmethod
    def from_evidence(cls, text: str, evidence: Evidence) -> Precondition:
        return cls(text, evidence.describe(), evidence.verdict == YES)


@dataclass
class Claim:
    paper: str
    claim: str
    paper_value: str
    ours: str
    verdict: str
    explanation: str
    notebook: str | None = None
    rule: str = ""
    precondition: str = "none"
    precondition_value: str = ""
    precondition_met: bool | None = None
    estimate: float | None = None
    margin: float | None = None
    to_resolve: str = ""
    seeds: list[int] | None = None
    details: list[dict] = field(default_factory=list)

    @property
    def holds(self) -> bool | None:
        return {YES: True, CHECK_PASS: True, NO: False, CHECK_FAIL: False}.get(self.verdict)

    @property
    def is_check(self) -> bool:
        return self.verdict.startswith("check")


def set_run(run_dir: str | Path | None, notebook: str | None, seeds: Sequence[int] | None = None) -> None:
    """Where claims go from now on, and the run's seed set (``start_notebook`` calls this)."""
    _ACTIVE["run_dir"] = Path(run_dir) if run_dir else None
    _ACTIVE["notebook"] = notebook
    _ACTIVE["seeds"] = list(seeds) if seeds is not None else None


def _combine(verdicts: list[str]) -> str:
    """Every part must hold: yes if all say yes, no if any says no, else inconclusive."""
    if any(v == NO for v in verdicts):
        return NO
    return YES if all(v == YES for v in verdicts) else INCONCLUSIVE


def _strings(**fields) -> None:
    for name, value in fields.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name}: expected a non-empty string, got {value!r}")


def record_claim(claim: str, paper_value: str, ours: str, *, evidence: Evidence | Sequence[Evidence],
                 precondition: Precondition | str, explanation: str, paper: str, rule: str = "",
                 notebook: str | None = None, run_dir: str | Path | None = None) -> Claim:
    """Record one reproduced claim and print it.

    - ``ours``: what we measured this run, in words and numbers;
    - ``evidence``: the test — one :class:`Evidence`, or several that must all hold (the verdict is yes when
      every part says yes, no when any says no, inconclusive otherwise);
    - ``precondition``: a :class:`Precondition` with its measured value, or the string ``"none"`` when the
      test needs nothing beyond itself; unmet → verdict ``n/a: precondition unmet``;
    - ``rule``: what "holds" means in words, when the evidence's threshold alone does not say it.
    """
    _strings(claim=claim, paper_value=paper_value, ours=ours, explanation=explanation, paper=paper)
    parts = [evidence] if isinstance(evidence, Evidence) else list(evidence) if isinstance(evidence, (list, tuple)) \
        else None
    if not parts or not all(isinstance(e, Evidence) for e in parts):
        raise ValueError(f"evidence: expected an Evidence or a non-empty list of them, got {evidence!r}")
    if isinstance(precondition, str):
        if precondition != "none":
            raise ValueError(f"precondition: expected a Precondition or the string 'none', got {precondition!r}")
        pre = None
    elif isinstance(precondition, Precondition):
        pre = precondition
    else:
        raise ValueError(f"precondition: expected a Precondition or 'none', got {precondition!r}")
    if not isinstance(rule, str):
        raise ValueError(f"rule: expected a string, got {rule!r}")
    tested = _combine([e.verdict for e in parts])
    verdict = UNMET if pre is not None and not pre.met else tested
    hint = ""
    if verdict == INCONCLUSIVE:
        needs = [e.units_to_resolve() for e in parts if e.verdict == INCONCLUSIVE]
        unit = next(e.unit for e in parts if e.verdict == INCONCLUSIVE)
        hint = (f"≈ {max(needs)} {unit} at the measured spread would resolve it" if all(needs)
                else "the estimate sits on the threshold: more data would not resolve it at this effect size")
    c = Claim(paper, claim, paper_value, ours, verdict, explanation, notebook or _ACTIVE["notebook"],
              rule=rule or "; ".join(e.describe() for e in parts),
              precondition=pre.text if pre else "none", precondition_value=pre.measured if pre else "",
              precondition_met=pre.met if pre else None,
              estimate=parts[0].estimate, margin=parts[0].margin, to_resolve=hint, seeds=_ACTIVE["seeds"],
              details=[{"evidence": e.describe(), "verdict": e.verdict} for e in parts])
    return _store(c, notebook, run_dir)


def record_check(claim: str, paper_value: str, ours: str, passed: bool, explanation: str, *, paper: str,
                 notebook: str | None = None, run_dir: str | Path | None = None) -> Claim:
    """Record a labelled **check**: something that holds by construction or is an exact computation (an
    identity, an accounting of bytes, a constant recomputed) — reported as ``check: pass`` / ``check: fail``,
    never counted as a finding."""
    _strings(claim=claim, paper_value=paper_value, ours=ours, explanation=explanation, paper=paper)
    if not isinstance(passed, bool):
        raise ValueError(f"passed: expected True or False, got {passed!r}")
    c = Claim(paper, claim, paper_value, ours, CHECK_PASS if passed else CHECK_FAIL, explanation,
              notebook or _ACTIVE["notebook"], rule="a check, not a test: it holds by construction or computation",
              seeds=_ACTIVE["seeds"])
    return _store(c, notebook, run_dir)


def _store(c: Claim, notebook: str | None, run_dir: str | Path | None) -> Claim:
    if notebook is not None:
        safe_name(notebook)  # a clear error for an empty or non-string name
    out_dir = Path(run_dir) if run_dir else _ACTIVE["run_dir"]
    if out_dir is not None:
        path = Path(out_dir) / "claims" / f"{safe_name(c.notebook or 'unnamed')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        existing = json.loads(path.read_text()) if path.exists() else []
        existing.append(dataclasses.asdict(c))
        path.write_text(json.dumps(existing, indent=2))
    mark = {YES: "✓ yes", NO: "✗ no", INCONCLUSIVE: "? inconclusive", UNMET: "– n/a: precondition unmet",
            CHECK_PASS: "✓ check passed", CHECK_FAIL: "✗ check failed"}[c.verdict]
    lines = [f"[claim] {c.claim}", f"        paper: {c.paper_value} | ours: {c.ours}"]
    if not c.is_check:
        pre = "none" if c.precondition == "none" else \
            f"{c.precondition} — measured {c.precondition_value} ({'met' if c.precondition_met else 'NOT met'})"
        lines.append(f"        precondition: {pre}")
    lines.append(f"        rule: {c.rule}")
    lines.append(f"        verdict: {mark}" + (f" ({c.to_resolve})" if c.to_resolve else ""))
    lines.append(f"        {c.explanation}")
    print("\n".join(lines))
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
    """Every claim a run recorded, in notebook order. ``ValueError`` naming the file when one is unreadable."""
    known = {f.name for f in dataclasses.fields(Claim)}
    claims = []
    for path in sorted((Path(run_dir) / "claims").glob("*.json")):
        try:
            rows = json.loads(path.read_text())
            claims.extend(Claim(**{k: v for k, v in d.items() if k in known}) for d in rows)
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise ValueError(f"run_dir: {path} is not a claims file written by record_claim ({exc})") from None
    return claims


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# --- comparing two runs (two seed sets) ---------------------------------------------------------------------

def _key(c: Claim) -> tuple[str, str]:
    return (c.notebook or "", c.claim)


def _change(a: str | None, b: str | None) -> str:
    if a is None or b is None:
        return "only in one run"
    if a == b:
        return "stable"
    if {a, b} == {YES, NO} or {a, b} == {CHECK_PASS, CHECK_FAIL}:
        return "FLIP"
    return "changed"


def compare_runs(run_a: str | Path, run_b: str | Path) -> list[dict]:
    """Per claim (matched by notebook and claim text), both runs' figures and verdicts and what changed:
    ``stable``, ``changed`` (e.g. yes → inconclusive), ``FLIP`` (yes ↔ no) or ``only in one run``."""
    for name, run in (("run_a", run_a), ("run_b", run_b)):
        if not (Path(run) / "claims").is_dir():
            raise ValueError(f"{name}: {run} has no claims/ folder; expected a run folder of `kimi-mini reproduce`")
    a = {_key(c): c for c in load_claims(run_a)}
    b = {_key(c): c for c in load_claims(run_b)}
    rows = []
    for key in list(a) + [k for k in b if k not in a]:
        ca, cb = a.get(key), b.get(key)
        rows.append({"notebook": key[0], "claim": key[1],
                     "verdict_a": ca.verdict if ca else None, "verdict_b": cb.verdict if cb else None,
                     "ours_a": ca.ours if ca else None, "ours_b": cb.ours if cb else None,
                     "seeds_a": ca.seeds if ca else None, "seeds_b": cb.seeds if cb else None,
                     "change": _change(ca.verdict if ca else None, cb.verdict if cb else None)})
    return rows


def format_comparison(rows: list[dict], name_a: str = "A", name_b: str = "B") -> str:
    """A markdown table of :func:`compare_runs` and one summary line."""
    lines = [f"| notebook | claim | verdict {name_a} | verdict {name_b} | change | ours {name_a} | ours {name_b} |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {_cell(r['notebook'])} | {_cell(r['claim'])} | {r['verdict_a'] or '—'} | "
                     f"{r['verdict_b'] or '—'} | **{r['change']}** | {_cell(r['ours_a'] or '—')} | "
                     f"{_cell(r['ours_b'] or '—')} |")
    counts = {k: sum(r["change"] == k for r in rows) for k in ("stable", "changed", "FLIP", "only in one run")}
    lines += ["", f"**Stability:** {len(rows)} claims — {counts['stable']} stable, {counts['changed']} changed "
              f"(not yes ↔ no), {counts['FLIP']} flipped yes ↔ no, {counts['only in one run']} in one run only."]
    return "\n".join(lines)


def write_report(run_dir: str | Path, preset: str, results: list[dict], compare_with: str | Path | None = None
                 ) -> Path:
    """Write ``REPORT.md``: one row per claim (precondition and its measured value, the rule, the verdict),
    then the notebooks' status and a summary line. With ``compare_with`` (another run of the same course,
    e.g. another seed set), a *stable* column says whether each verdict is the same there.

    ``results``: one dict per notebook run: ``notebook``, ``seconds``, ``ok``, ``error`` (or None).
    """
    run_dir = Path(run_dir)
    claims = load_claims(run_dir)
    seconds = {r["notebook"]: r["seconds"] for r in results}
    other = {}
    if compare_with is not None:
        other = {(r["notebook"], r["claim"]): r for r in compare_runs(run_dir, compare_with)}
    seed_sets = sorted({tuple(c.seeds) for c in claims if c.seeds})
    lines = [
        f"# kimi-mini reproduction report — preset `{preset}`",
        "",
        "Every figure in the *ours* column was measured by the notebook in this run"
        + (f" (seeds {', '.join(map(str, seed_sets[0]))})." if len(seed_sets) == 1 else "."),
        "Verdicts: **yes** / **no** — the 95 % interval is wholly on one side of the claim's threshold; "
        "**inconclusive** — it straddles the threshold; **n/a: precondition unmet** — the test would mean nothing "
        "here (the precondition's measured value says why); **check** — holds by construction or computation, "
        "not a finding.",
    ]
    if compare_with is not None:
        lines.append(f"*stable?* compares each verdict with the run in `{compare_with}`.")
    header = "| paper | claim | paper's figure | ours | precondition (measured) | rule | verdict |"
    rule = "|---|---|---|---|---|---|---|"
    if compare_with is not None:
        header += " stable? |"
        rule += "---|"
    lines += ["", header + " notebook | seconds |", rule + "---|---|"]
    for c in claims:
        if c.is_check:
            pre = "— (check)"
        elif c.precondition == "none":
            pre = "none"
        else:
            pre = f"{c.precondition}: {c.precondition_value} ({'met' if c.precondition_met else 'unmet'})"
        verdict = c.verdict + (f" ({c.to_resolve})" if c.to_resolve else "")
        row = (f"| {_cell(c.paper)} | {_cell(c.claim)} | {_cell(c.paper_value)} | {_cell(c.ours)} | {_cell(pre)} | "
               f"{_cell(c.rule)} | {_cell(verdict)} |")
        if compare_with is not None:
            r = other.get(_key(c))
            row += f" {'—' if r is None else r['change'] if r['change'] != 'stable' else 'yes'} |"
        lines.append(row + f" {_cell(c.notebook)} | {seconds.get(c.notebook, float('nan')):.0f} |")
    lines += ["", "## Why each verdict", ""]
    lines += [f"- **{_cell(c.notebook)}** — {_cell(c.claim)}: {_cell(c.explanation)}" for c in claims]
    lines += ["", "## Notebooks", "", "| notebook | status | seconds |", "|---|---|---|"]
    for r in results:
        status = "ok" if r["ok"] else f"FAILED: {_cell(r.get('error'))}"
        lines.append(f"| {r['notebook']} | {status} | {r['seconds']:.0f} |")
    count = {v: sum(c.verdict == v for c in claims) for v in VERDICTS}
    n_fail = sum(not r["ok"] for r in results)
    total = sum(r["seconds"] for r in results)
    summary = (f"**Summary:** {len(claims)} claims — {count[YES]} yes, {count[NO]} no, {count[INCONCLUSIVE]} "
               f"inconclusive, {count[UNMET]} n/a (precondition unmet), {count[CHECK_PASS]} checks passed, "
               f"{count[CHECK_FAIL]} checks failed")
    if compare_with is not None:
        changes = [r["change"] for r in other.values()]
        summary += (f"; against the other run: {changes.count('stable')} stable, {changes.count('changed')} "
                    f"changed, {changes.count('FLIP')} flipped yes ↔ no")
    summary += (f"; {len(results) - n_fail}/{len(results)} notebooks ran ({n_fail} failed) in {total:.0f} s.")
    lines += ["", summary, ""]
    path = run_dir / "REPORT.md"
    path.write_text("\n".join(lines))
    return path
