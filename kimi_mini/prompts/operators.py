"""GPS reproduction operators and filters (Xu et al., "GPS: Genetic Prompt Search for Efficient Few-shot
Learning", arXiv 2210.17041, §3).

A prompt is an instruction *template*: literal instruction text plus input slots ``{text}`` (and optionally
``{options}``), as in :mod:`kimi_mini.prompts.tasks`. An operator maps a parent template to a child template;
it only rewrites the literal text (the instruction), never a slot. The paper's operators and their stand-ins:

- :class:`Continuation` — GPT-2 sentence continuation → a small byte-level *generator LM* (a KimiMini trained
  on the instruction templates of the zoo's training tasks, slots written literally) continues the
  instruction truncated at a random word.
- :class:`ClozeRewrite` — T5 cloze (mask a span, let a masked LM fill it) → mask 1–3 words; the generator LM
  samples candidate fillers from the left context and the filler whose *whole* template (right context
  included) it finds most likely wins — a causal LM doing cloze by rescoring.
- :class:`WordSubstitution` — back-translation (needs a translation model we cannot have offline) → replace
  a word by one of its nearest neighbours in 26,423 real word2vec vectors (:func:`kimi_mini.realdata.word_vectors`):
  a meaning-preserving-ish paraphrase at the word level.

Filters, as released (:func:`filter_reason`): every input slot exactly once; no label word leaking into the
instruction (a label word the parent's instruction did not already contain, so a manual prompt such as
"Good or bad: {text}" stays a legal parent); no duplicate of any prompt seen so far.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence

import torch

from kimi_mini.data import ByteTokenizer
from kimi_mini.model import KimiMini

__all__ = ["GeneratorLM", "train_generator_lm", "Continuation", "ClozeRewrite", "WordSubstitution", "filter_reason",
           "instruction_words", "literal_spans"]

_WORD = re.compile(r"[A-Za-z]+")


def literal_spans(template: str) -> list[tuple[str, str | None]]:
    """``template`` as ``[(literal_text, field_or_None), ...]`` (string.Formatter's parse, field specs dropped)."""
    return [(lit, f) for lit, f, _, _ in string.Formatter().parse(template)]


def _join(spans: Sequence[tuple[str, str | None]]) -> str:
    return "".join(lit.replace("{", "(").replace("}", ")") + ("" if f is None else "{" + f + "}") for lit, f in spans)


def instruction_words(template: str) -> list[str]:
    """The lower-cased alphabetic words of the template's literal (non-slot) text."""
    return [w.lower() for lit, _ in literal_spans(template) for w in _WORD.findall(lit)]


def filter_reason(child: str, parent: str, slots: Sequence[str], label_words: Sequence[str],
                  seen: set[str]) -> str | None:
    """Why ``child`` is rejected (``"slot"``, ``"label leak"``, ``"duplicate"``), or None if it passes."""
    try:
        fields = [f for _, f in literal_spans(child) if f is not None]
    except ValueError:
        return "slot"
    if any(fields.count(s) != 1 for s in slots) or any(f not in slots and f != "options" for f in fields) \
            or fields.count("options") > 1:
        return "slot"
    child_words, parent_words = instruction_words(child), instruction_words(parent)
    for w in {w.lower() for lw in label_words for w in _WORD.findall(lw)}:
        if child_words.count(w) > parent_words.count(w):
            return "label leak"
    if child in seen:
        return "duplicate"
    return None


class GeneratorLM:
    """A small causal byte LM used as the operators' text generator (GPT-2/T5's stand-in).

    ``continue_text(prefix, max_new, rng)`` samples a continuation (stops at a newline);
    ``loglik(texts)`` is the total log-probability of each text (bytes after the first)."""

    def __init__(self, model: KimiMini, temperature: float = 0.8, top_k: int = 20):
        if not isinstance(model, KimiMini):
            raise ValueError(f"model: expected a KimiMini, got {type(model).__name__}")
        self.model, self.temperature, self.top_k = model.eval(), temperature, top_k
        self.tok = ByteTokenizer()

    def _ids(self, text: str) -> list[int]:
        return ([10] + self.tok.encode(text))[-(self.model.config.max_seq_len - 40):]  # "\n" starts a template

    @torch.no_grad()
    def continue_text(self, prefix: str, max_new: int, rng: random.Random) -> str:
        ids = torch.tensor([self._ids(prefix)])
        g = torch.Generator().manual_seed(rng.randrange(2**31))
        out = self.model.generate(ids, max_new, temperature=self.temperature, top_k=self.top_k, generator=g)
        text = self.tok.decode(out[0, ids.shape[1]:].tolist())
        return text.split("\n")[0]

    @torch.no_grad()
    def loglik(self, texts: Sequence[str]) -> list[float]:
        seqs = [self._ids(t) + [10] for t in texts]
        T = max(map(len, seqs))
        x = torch.zeros(len(seqs), T, dtype=torch.long)
        for i, s in enumerate(seqs):
            x[i, :len(s)] = torch.tensor(s)
        logp = torch.log_softmax(self.model(x)[0][:, :-1], -1).gather(2, x[:, 1:, None])[..., 0]  # [B, T-1]
        mask = torch.arange(T - 1)[None] < torch.tensor([len(s) - 1 for s in seqs])[:, None]
        return (logp * mask).sum(1).tolist()


def _edit_choice(template: str, rng: random.Random) -> tuple[list[tuple[str, str | None]], int] | None:
    """A random span index whose literal text has at least one word (the instruction part to edit)."""
    spans = literal_spans(template)
    idx = [i for i, (lit, _) in enumerate(spans) if _WORD.search(lit)]
    return (spans, rng.choice(idx)) if idx else None


class Continuation:
    """GPT-2 continuation's stand-in: cut the template at a random word of its instruction and let the generator
    LM write the rest (up to a newline, about as many bytes as were cut plus a few). What follows the cut is
    the LM's — slots included — so a child can drop or repeat ``{text}``; the slot filter removes those."""

    name = "continuation"

    def __init__(self, lm: GeneratorLM):
        self.lm = lm

    def __call__(self, template: str, rng: random.Random) -> str | None:
        choice = _edit_choice(template, rng)
        if choice is None:
            return None
        spans, i = choice
        lit = spans[i][0]
        cuts = [m.start() for m in _WORD.finditer(lit)][1:] or [m.end() for m in _WORD.finditer(lit)][:1]
        head = _join(spans[:i]) + lit[:rng.choice(cuts)]
        rest = len(template) - len(head)
        return head + self.lm.continue_text(head, max_new=rest + 8, rng=rng)


class ClozeRewrite:
    """T5 cloze's stand-in: mask 1–3 consecutive words; sample ``n_candidates`` fillers from the generator LM
    given the left context; keep the filler whose completed template the LM scores highest."""

    name = "cloze"

    def __init__(self, lm: GeneratorLM, n_candidates: int = 4):
        self.lm, self.n_candidates = lm, n_candidates

    def __call__(self, template: str, rng: random.Random) -> str | None:
        choice = _edit_choice(template, rng)
        if choice is None:
            return None
        spans, i = choice
        lit, field = spans[i]
        words = list(_WORD.finditer(lit))
        a = rng.randrange(len(words))
        b = min(len(words), a + rng.randint(1, 3))
        start, end = words[a].start(), words[b - 1].end()
        head = _join(spans[:i]) + lit[:start]
        fills = set()
        for _ in range(self.n_candidates):
            gen = self.lm.continue_text(head, max_new=end - start + 6, rng=rng)
            m = re.match(r"[A-Za-z' ]*[A-Za-z]", gen)
            n_words = b - a
            if m:
                fills.add(" ".join(m.group(0).split(" ")[:n_words]))
        fills.discard(lit[start:end])
        if not fills:
            return None
        fills = sorted(fills)
        cands = [_join(spans[:i] + [(lit[:start] + f + lit[end:], field)] + spans[i + 1:]) for f in fills]
        scores = self.lm.loglik(cands)
        return cands[max(range(len(cands)), key=scores.__getitem__)]


class WordSubstitution:
    """Back-translation's stand-in: replace one instruction word found in the word vectors by one of its
    ``k`` nearest neighbours (single alphabetic words only, case kept)."""

    name = "word substitution"

    def __init__(self, word_vectors, k: int = 5):
        self.wv, self.k = word_vectors, k
        self._cache: dict[str, list[str]] = {}

    def _neighbours(self, word: str) -> list[str]:
        if word not in self._cache:
            near = self.wv.nearest(word, k=4 * self.k) if word in self.wv else []
            self._cache[word] = [w for w, _ in near if w.isalpha() and w.lower() != word.lower()][: self.k]
        return self._cache[word]

    def __call__(self, template: str, rng: random.Random) -> str | None:
        spans = literal_spans(template)
        sites = [(i, m) for i, (lit, _) in enumerate(spans) for m in _WORD.finditer(lit)
                 if self._neighbours(m.group(0).lower())]
        if not sites:
            return None
        i, m = rng.choice(sites)
        new = rng.choice(self._neighbours(m.group(0).lower()))
        if m.group(0)[0].isupper():
            new = new[0].upper() + new[1:]
        lit, field = spans[i]
        spans[i] = (lit[:m.start()] + new + lit[m.end():], field)
        return _join(spans)


def train_generator_lm(templates: Sequence[str], *, d_model: int = 96, n_layers: int = 2, steps: int = 300,
                       batch_size: int = 32, seq_len: int = 64, lr: float = 3e-3, seed: int = 0,
                       cache: bool = True) -> GeneratorLM:
    """The operators' generator: a KimiMini trained (next-byte loss) on ``templates`` joined by newlines —
    instruction text with its slots written literally, so it learns what an instruction looks like. Cached
    under ``data/cache/gps/`` by a hash of the templates, the settings and this function's code."""
    import hashlib
    import json

    from kimi_mini.data import cache_dir, code_key
    from kimi_mini.model import KimiConfig
    from kimi_mini.train import load_checkpoint, train

    if isinstance(templates, str) or len(templates) < 2:
        raise ValueError(f"templates: expected a list of at least two templates, got {templates!r}")
    stream = torch.tensor(ByteTokenizer().encode("\n" + "\n".join(templates) + "\n"), dtype=torch.uint8)
    if len(stream) <= seq_len + 1:
        raise ValueError(f"templates: {len(stream)} bytes in all, fewer than seq_len={seq_len} + 2")
    config = KimiConfig(d_model=d_model, n_layers=n_layers, n_heads=4, d_ff=d_model * 8 // 3 // 32 * 32,
                        max_seq_len=128)
    settings = dict(config=config.to_dict(), steps=steps, batch_size=batch_size, seq_len=seq_len, lr=lr, seed=seed)
    settings["code"] = code_key(train_generator_lm)  # an edit of the training code never serves a stale model
    key = hashlib.sha1((json.dumps(settings, sort_keys=True) + "\n".join(templates)).encode()).hexdigest()[:16]
    path = cache_dir() / "gps" / f"generator-{key}.pt"
    torch.manual_seed(seed)
    model = KimiMini(config)
    if cache and path.exists():
        load_checkpoint(path, model)
        return GeneratorLM(model)

    def batch_fn(step, gen, device):
        starts = torch.randint(0, len(stream) - seq_len - 1, (batch_size,), generator=gen)
        window = stream[starts[:, None] + torch.arange(seq_len + 1)].long()
        return window[:, :-1].to(device), window[:, 1:].to(device)

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    train(model, opt, None, steps=steps, batch_size=batch_size, seq_len=seq_len, batch_fn=batch_fn, seed=seed,
          progress=False, desc="generator LM", checkpoint=path if cache else None)
    return GeneratorLM(model)
