"""A multi-aspect review benchmark with known rationales, built from real human-rated sentences.

BeerAdvocate (the benchmark of DMR, arXiv 2106.00320, and of RNP) was withdrawn by its owner, and no
token-level rationale corpus installs offline. This module builds the same *shape* of task from real
sentences that humans rated from −4 to +4 (Hutto & Gilbert, ICWSM 2014, shipped in the
``vaderSentiment==3.3.2`` sdist; :func:`kimi_mini.realdata.vader_sentences`):

- a review is three "aspect" sentences, one per source set — the **target** aspect (movie-review
  snippets by default) and two **distractor** aspects (Amazon snippets, tweets) — in random order;
- its label is the sign of the target sentence's mean human rating; targets with |rating| < 0.5 are
  dropped (no clear sign);
- each distractor is drawn so that its rating correlates with the target's, as the aspects of a beer
  review do (ρ ≈ 0.6–0.7): through a Gaussian copula, z_a = ρ·z_t + √(1−ρ²)·ε on normal scores
  z = Φ⁻¹(rank / n), then the distractor sentence whose normal score is nearest z_a (one of the four
  nearest, at random). This is the spurious shortcut: a distractor alone predicts the label often;
- optionally (``shortcut_p``, off by default; notebook 09 turns it on) the first distractor is instead a
  **shortcut aspect** in which RNP's known failure can appear: a short, strongly rated sentence (easier to
  read than the target) whose sign is the label's with probability ``shortcut_p`` — right often, never
  always, so a full-text reader does best on the target; ``max_abs_rating`` keeps the targets milder;
- the gold rationale is exactly the target sentence's tokens.

Sentences are filtered (never truncated) to ``min_tokens … max_sentence_tokens`` tokens, so a gold
rationale is a whole human-rated sentence. Every sentence pool is split train/test *before* reviews
are composed: no test sentence is ever seen in training. Word vectors are the 300-d word2vec vectors of
:func:`kimi_mini.realdata.word_vectors`, frozen; out-of-vocabulary words get a fixed random vector
seeded by the word itself; ``dim`` optionally projects all vectors onto their top principal components.

The result is a ``datasets.DatasetDict`` (``train``/``test``; columns ``tokens``, ``aspect`` (per-token
aspect index, 0 = target), ``label``, ``ratings``, ``domains``) cached under ``data/cache/`` with the
vocabulary and embedding matrix next to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kimi_mini.checks import check_int, check_number
from kimi_mini.data import cache_dir, code_key
from kimi_mini.realdata import VADER_DOMAINS, vader_sentences, word_vectors

__all__ = ["tokenize", "build_reviews", "ReviewBenchmark", "ReviewTensors", "PAD"]

PAD = "<pad>"
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?]")
_VERSION = 1  # bump when the build changes: the cache key includes it


def tokenize(text: str) -> list[str]:
    """Lower-cased words (with a clitic: ``don't``), numbers, and ``!``/``?``; other punctuation dropped."""
    if not isinstance(text, str):
        raise ValueError(f"text: expected str, got {type(text).__name__}")
    return _TOKEN.findall(text.lower())


@dataclass
class ReviewTensors:
    """One split as padded tensors: ``ids``/``aspect`` long ``[N, T]``, ``mask``/``gold`` bool ``[N, T]``,
    ``label`` long ``[N]`` (1 = positive). ``aspect`` is −1 on padding."""

    ids: Tensor
    mask: Tensor
    gold: Tensor
    aspect: Tensor
    label: Tensor

    def __len__(self) -> int:
        return len(self.label)

    def take(self, idx: Tensor) -> ReviewTensors:
        idx = idx.to(self.ids.device)
        return ReviewTensors(self.ids[idx], self.mask[idx], self.gold[idx], self.aspect[idx], self.label[idx])

    def to(self, device) -> ReviewTensors:
        return ReviewTensors(*(t.to(device) for t in (self.ids, self.mask, self.gold, self.aspect, self.label)))


def _token_ids(batch: dict, index: dict[str, int]) -> dict:
    """``Dataset.map`` function (batched): each review's words as vocabulary ids."""
    return {"ids": [[index[w] for w in words] for words in batch["tokens"]]}


@dataclass
class ReviewBenchmark:
    """The benchmark: ``dataset`` (DatasetDict), ``vocab`` (index 0 = ``<pad>``), frozen ``embeddings``
    ``[V, dim]`` (row 0 zero), the ``domains`` (target first) and the build ``params``."""

    dataset: object
    vocab: list[str]
    embeddings: Tensor
    domains: tuple[str, ...]
    params: dict

    def tensors(self, split: str) -> ReviewTensors:
        if split not in self.dataset:
            raise ValueError(f"split: expected one of {sorted(self.dataset)}, got {split!r}")
        # words -> vocabulary ids with Dataset.map (fingerprinted: cached beside the saved set, so a second call
        # only reads it back), then the torch format hands over one int64 tensor per review to pad
        index = {w: i for i, w in enumerate(self.vocab)}
        ds = self.dataset[split].map(_token_ids, batched=True, fn_kwargs={"index": index})
        cols = ds.with_format("torch", columns=["ids", "aspect", "label"])[:]
        pad = torch.nn.utils.rnn.pad_sequence
        ids = pad(list(cols["ids"]), batch_first=True, padding_value=0).long()
        aspect = pad(list(cols["aspect"]), batch_first=True, padding_value=-1).long()
        mask = aspect >= 0
        return ReviewTensors(ids, mask, aspect == 0, aspect, cols["label"].long())

    def aspect_correlation(self, split: str = "train") -> list[float]:
        """Pearson correlation of the target's rating with each distractor's rating (one per distractor)."""
        r = np.array(self.dataset[split]["ratings"])  # [N, n_aspects], target first
        return [float(np.corrcoef(r[:, 0], r[:, j])[0, 1]) for j in range(1, r.shape[1])]

    def shortcut_agreement(self, split: str = "train") -> list[float]:
        """How often each distractor's rating has the label's sign: a distractor-only classifier's ceiling."""
        ds = self.dataset[split]
        r, y = np.array(ds["ratings"]), np.array(ds["label"])
        return [float(((r[:, j] > 0) == (y == 1)).mean()) for j in range(1, r.shape[1])]

    def __repr__(self) -> str:
        sizes = {k: len(v) for k, v in self.dataset.items()}
        return (f"ReviewBenchmark(target={self.domains[0]!r}, distractors={self.domains[1:]}, {sizes}, "
                f"vocab {len(self.vocab)}, embeddings {tuple(self.embeddings.shape)})")


def _pools(domain: str, min_tokens: int, max_tokens: int, test_fraction: float, rng: np.random.Generator):
    rows = [(tokenize(s), r) for s, r in vader_sentences(domain)]
    rows = [(w, r) for w, r in rows if min_tokens <= len(w) <= max_tokens]
    perm = rng.permutation(len(rows))
    n_test = int(round(test_fraction * len(rows)))
    return {"test": [rows[i] for i in perm[:n_test]], "train": [rows[i] for i in perm[n_test:]]}


def _normal_scores(ratings: np.ndarray) -> np.ndarray:
    from scipy.stats import norm, rankdata

    return norm.ppf((rankdata(ratings) - 0.5) / len(ratings))


def _compose(target_pool, distractor_pools, rho, min_abs, rng, repeats=1, shortcut=None, max_abs=np.inf):
    t_rat = np.array([r for _, r in target_pool])
    if shortcut is not None:  # (p, min_abs, max_tokens): the first distractor's strong, short sentences, by sign
        p_agree, s_min, s_len = shortcut
        s_rat = np.array([r for _, r in distractor_pools[0]])
        short = np.array([len(w) <= s_len for w, _ in distractor_pools[0]])
        by_sign = {True: np.nonzero((s_rat >= s_min) & short)[0], False: np.nonzero((s_rat <= -s_min) & short)[0]}
        if min(len(v) for v in by_sign.values()) == 0:
            raise ValueError(f"shortcut_min_abs, shortcut_max_tokens: no sentence of the shortcut aspect has |rating|"
                             f" >= {s_min} and <= {s_len} tokens with both signs")
    keep = np.nonzero((np.abs(t_rat) >= min_abs) & (np.abs(t_rat) <= max_abs))[0]
    z_t = _normal_scores(t_rat)  # scores over the whole pool: the copula sees the natural marginal
    sorted_pools = []
    for pool in distractor_pools:
        z = _normal_scores(np.array([r for _, r in pool]))
        order = np.argsort(z, kind="stable")
        sorted_pools.append((pool, order, z[order]))
    out = {"tokens": [], "aspect": [], "label": [], "ratings": [], "domains": []}
    for i in rng.permutation(np.repeat(keep, repeats)):
        parts = [(0, target_pool[i])]
        for a, (pool, order, z_sorted) in enumerate(sorted_pools, start=1):
            if a == 1 and shortcut is not None:  # sign = the label's with probability p, a strong sentence
                positive = bool(t_rat[i] > 0) == bool(rng.random() < p_agree)
                parts.append((a, pool[int(rng.choice(by_sign[positive]))]))
                continue
            z_a = rho * z_t[i] + np.sqrt(1 - rho**2) * rng.standard_normal()
            at = int(np.searchsorted(z_sorted, z_a))
            j = int(np.clip(at + rng.integers(-2, 2), 0, len(pool) - 1))
            parts.append((a, pool[order[j]]))
        ratings = [0.0] * len(parts)
        tokens, aspect, domains = [], [], []
        for a, (words, r) in (parts[k] for k in rng.permutation(len(parts))):
            tokens += words
            aspect += [a] * len(words)
            domains.append(a)
            ratings[a] = float(r)
        out["tokens"].append(tokens)
        out["aspect"].append(aspect)
        out["label"].append(int(t_rat[i] > 0))
        out["ratings"].append(ratings)
        out["domains"].append(domains)
    return out


def _embeddings(vocab: list[str], dim: int | None) -> Tensor:
    wv = word_vectors()
    known = wv.vectors
    std = float(known.std())
    emb = torch.zeros(len(vocab), known.shape[1])
    for i, w in enumerate(vocab[1:], start=1):
        if w in wv.index:
            emb[i] = known[wv.index[w]]
        else:  # OOV: a fixed random vector seeded by the word itself (stable across builds and machines)
            g = torch.Generator().manual_seed(zlib.crc32(w.encode()))
            emb[i] = torch.randn(known.shape[1], generator=g) * std
    if dim is not None:  # project onto the top principal components of the vocabulary's vectors
        centred = emb[1:] - emb[1:].mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        emb = (emb - emb[1:].mean(0)) @ v[:dim].T
        emb = emb / emb[1:].std()
        emb[0] = 0.0
    return emb.contiguous()


def build_reviews(target: str = "movie", distractors: tuple[str, ...] = ("amazon", "tweet"), *, rho: float = 0.7,
                  min_tokens: int = 3, max_sentence_tokens: int = 12, min_abs_rating: float = 0.5,
                  test_fraction: float = 0.2, train_repeats: int = 1, dim: int | None = None, seed: int = 0,
                  shortcut_p: float | None = None, shortcut_min_abs: float = 2.0,
                  shortcut_max_tokens: int | None = None, max_abs_rating: float | None = None,
                  cache: Path | None = None) -> ReviewBenchmark:
    """Build (once; then load from ``data/cache/``) the review benchmark described in the module docstring.

    ``rho`` is the copula correlation between the target's and each distractor's rating (the measured
    Pearson correlation is in :meth:`ReviewBenchmark.aspect_correlation`); ``train_repeats`` puts every
    training target sentence into that many reviews, each with freshly drawn distractors (the test split
    uses each target once); ``dim=None`` keeps the 300-d vectors, an integer projects them onto that many
    principal components.

    ``shortcut_p`` (None: off) makes the first distractor a **shortcut aspect** that is easier to read than
    the target and tied to the label: its sentence is drawn uniformly from that aspect's strongly rated
    sentences (|rating| ≥ ``shortcut_min_abs``; at most ``shortcut_max_tokens`` tokens, None: no extra bound),
    with the label's sign with probability ``shortcut_p`` and the other sign otherwise (the copula ``rho``
    then applies to the other distractors only). Both splits are
    built this way, so the shortcut works on the test set too — as a correlated aspect does in BeerAdvocate.
    ``max_abs_rating`` (None: no bound) keeps only target sentences with |rating| ≤ it: milder, harder-to-read
    targets, so that the shortcut is the easier read.
    """
    domains = (target, *distractors)
    for d in domains:
        if d not in VADER_DOMAINS:
            raise ValueError(f"target/distractors: unknown domain {d!r}; expected one of {sorted(VADER_DOMAINS)}")
    if len(set(domains)) != len(domains) or not distractors:
        raise ValueError(f"distractors: expected ≥ 1 domains different from the target, got {distractors!r}")
    if not 0 <= rho < 1:
        raise ValueError(f"rho: expected 0 <= rho < 1, got {rho!r}")
    if not (isinstance(min_tokens, int) and isinstance(max_sentence_tokens, int) and 1 <= min_tokens
            <= max_sentence_tokens):
        raise ValueError(f"min_tokens, max_sentence_tokens: expected 1 <= min <= max, got {min_tokens}, "
                         f"{max_sentence_tokens}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected in (0, 1), got {test_fraction!r}")
    if not isinstance(train_repeats, int) or train_repeats < 1:
        raise ValueError(f"train_repeats: expected an integer >= 1, got {train_repeats!r}")
    if shortcut_p is not None:
        check_number("shortcut_p", shortcut_p, 0, 1)
        check_number("shortcut_min_abs", shortcut_min_abs, 0, 4)
        if shortcut_max_tokens is None:
            shortcut_max_tokens = max_sentence_tokens
        check_int("shortcut_max_tokens", shortcut_max_tokens, min_tokens, max_sentence_tokens)
    if dim is not None and not (isinstance(dim, int) and 1 <= dim <= 300):
        raise ValueError(f"dim: expected None or an integer in [1, 300], got {dim!r}")
    params = dict(target=target, distractors=list(distractors), rho=rho, min_tokens=min_tokens,
                  max_sentence_tokens=max_sentence_tokens, min_abs_rating=min_abs_rating,
                  test_fraction=test_fraction, dim=dim, seed=seed, version=_VERSION)
    if train_repeats != 1:  # keeps the cache key of earlier builds
        params["train_repeats"] = train_repeats
    if max_abs_rating is not None:  # likewise
        check_number("max_abs_rating", max_abs_rating, min_abs_rating)
        params["max_abs_rating"] = float(max_abs_rating)
    if shortcut_p is not None:  # likewise
        params["shortcut"] = [float(shortcut_p), float(shortcut_min_abs), int(shortcut_max_tokens)]
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    code = code_key(tokenize, _pools, _normal_scores, _compose, _embeddings, _build, vader_sentences, word_vectors)
    path = (cache or cache_dir()) / f"dmr-reviews-{key}-{code}"  # code: an edit of the build never serves stale data
    if not path.exists():
        _build(params, path)
    return _load(path)


def _build(params: dict, path: Path) -> None:
    import datasets

    datasets.disable_progress_bars()
    rng = np.random.default_rng(params["seed"])
    domains = [params["target"], *params["distractors"]]
    pools = {d: _pools(d, params["min_tokens"], params["max_sentence_tokens"], params["test_fraction"], rng)
             for d in domains}
    splits = {}
    for split in ("train", "test"):
        rows = _compose(pools[domains[0]][split], [pools[d][split] for d in domains[1:]], params["rho"],
                        params["min_abs_rating"], rng, params.get("train_repeats", 1) if split == "train" else 1,
                        params.get("shortcut"), params.get("max_abs_rating", np.inf))
        splits[split] = datasets.Dataset.from_dict(rows)
    vocab = [PAD] + sorted({w for ds in splits.values() for words in ds["tokens"] for w in words})
    emb = _embeddings(vocab, params["dim"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".building-"))
    datasets.DatasetDict(splits).save_to_disk(str(tmp / "dataset"))
    (tmp / "vocab.json").write_text(json.dumps(vocab))
    (tmp / "params.json").write_text(json.dumps(params, sort_keys=True))
    torch.save(emb, tmp / "embeddings.pt")
    try:
        os.replace(tmp, path)  # atomic: a parallel builder cannot half-write it
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race; its copy is identical


def _load(path: Path) -> ReviewBenchmark:
    import pickle

    import datasets

    datasets.disable_progress_bars()
    try:
        params = json.loads((path / "params.json").read_text())
        return ReviewBenchmark(dataset=datasets.load_from_disk(str(path / "dataset")),
                               vocab=json.loads((path / "vocab.json").read_text()),
                               embeddings=torch.load(path / "embeddings.pt", weights_only=True),
                               domains=(params["target"], *params["distractors"]), params=params)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise ValueError(f"cache: {path} is damaged ({type(exc).__name__}); delete it and it will be built "
                         f"again") from None
