"""Text data for the course: a byte-level tokenizer and a real corpus that needs no download.

The corpus is the Python standard library's own ``.py`` sources on the running interpreter — real,
varied, human-written text (code, docstrings, comments) that every machine with Python already has,
under the PSF licence. See ``data/README.md`` (the dataset card).

Build: the sorted list of ``.py`` files under ``sysconfig.get_paths()["stdlib"]``, without
``site-packages`` and the test suites; a file goes to *validation* when ``crc32(relative path) % 10 == 0``
(≈10 %, stable when files are added), else to *train*. It is exposed as a Hugging Face
``datasets.DatasetDict`` (columns ``path``, ``text``) and cached under ``data/cache/``;
:func:`load_corpus_dataset` maps it to byte tokens (splits ``train`` / ``val``, torch-formatted), and
:func:`load_corpus` joins each split's files into the token streams training reads (:class:`TokenData`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import os
import shutil
import sys
import sysconfig
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kimi_mini.checks import check_int, describe

__all__ = ["ByteTokenizer", "TokenData", "stdlib_files", "load_stdlib_dataset", "load_corpus_dataset", "load_corpus",
           "unigram_entropy", "cache_dir", "save_atomically", "atomic_path", "cache_lock", "code_key"]

_EXCLUDED_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


class ByteTokenizer:
    """UTF-8 bytes as tokens: vocabulary 256, no merges, no unknown token.

    ``decode(encode(text)) == text`` for every string that is valid Unicode (no lone surrogates).
    """

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"text: expected str, got {type(text).__name__}")
        try:
            return list(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise ValueError(f"text: not encodable as UTF-8 ({exc.reason} at {exc.start})") from None

    def decode(self, ids, errors: str = "replace") -> str:
        """Bytes back to text. Sampled bytes need not be valid UTF-8: ``errors="replace"`` shows
        broken sequences as U+FFFD; ``errors="strict"`` raises instead."""
        if torch.is_tensor(ids):
            ids = ids.tolist()
        ids = list(ids)
        if any((not isinstance(i, int)) or i < 0 or i > 255 for i in ids):
            raise ValueError("ids: expected integers in [0, 255]")
        return bytes(ids).decode("utf-8", errors=errors)

    def __repr__(self) -> str:
        return "ByteTokenizer(vocab_size=256)"


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[str]:
    """Sorted relative paths of the stdlib's ``.py`` files (tests and site-packages excluded)."""
    root = stdlib_root()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _EXCLUDED_DIRS)
        for name in filenames:
            if name.endswith(".py"):
                found.append(Path(dirpath, name).relative_to(root).as_posix())
    return sorted(found)


def is_validation_file(path: str) -> bool:
    return zlib.crc32(path.encode()) % 10 == 0


def cache_dir() -> Path:
    """Where built data sets, downloaded archives and trained checkpoints are kept: ``$KIMI_MINI_CACHE`` when
    it is set; else, in a checkout (``make`` / ``pip install -e .``), the repository's ``data/cache/``
    (gitignored); else — a wheel installed anywhere — the user's cache folder,
    ``platformdirs.user_cache_dir("kimi-mini")`` (``~/.cache/kimi-mini`` on Linux)."""
    env = os.environ.get("KIMI_MINI_CACHE")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "kernels").is_dir():
        return checkout / "data" / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir("kimi-mini", appauthor=False))


def _fingerprint(files: list[str]) -> str:
    root = stdlib_root()
    h = hashlib.sha256(sys.version.encode())
    for f in files:
        h.update(f.encode())
        h.update(str((root / f).stat().st_size).encode())
    return h.hexdigest()[:12]


def load_stdlib_dataset(cache: Path | None = None):
    """The corpus as a ``datasets.DatasetDict`` with splits ``train`` and ``validation``.

    Built once per interpreter (the cache key hashes the Python version and the file list) and
    then loaded from ``data/cache/``. Files that are not valid UTF-8 are skipped (none in 3.11).
    """
    import datasets

    datasets.disable_progress_bars()
    files = stdlib_files()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    target = (cache or cache_dir()) / f"stdlib-py{version}-{_fingerprint(files)}"
    if target.exists():
        return datasets.load_from_disk(str(target))
    root = stdlib_root()
    rows: dict[str, dict[str, list[str]]] = {"train": {"path": [], "text": []},
                                              "validation": {"path": [], "text": []}}
    for f in files:
        try:
            text = (root / f).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        split = "validation" if is_validation_file(f) else "train"
        rows[split]["path"].append(f)
        rows[split]["text"].append(text)
    dd = datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in rows.items()})
    save_atomically(dd, target)
    return datasets.load_from_disk(str(target))


@contextlib.contextmanager
def cache_lock(target: Path):
    """An exclusive lock (``flock`` on ``<target>.lock`` beside it) held while one process builds or writes
    ``target``: a second builder waits, then finds the entry written."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_path(target: Path, *, folder: bool = False):
    """The one writer of every cache entry: yields a fresh temporary path beside ``target`` (a file, or with
    ``folder=True`` an empty folder) under :func:`cache_lock`; when the block ends without an error it is
    renamed onto ``target`` in one atomic step. Temporary names are unique (two workers never share one) and a
    failed build leaves nothing behind."""
    target = Path(target)
    with cache_lock(target):
        if folder:
            tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.building-"))
        else:
            fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
            os.close(fd)
            tmp = Path(name)
        try:
            yield tmp
            if folder and target.exists():  # another process built it first: its copy is kept
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
            raise


def code_key(*objects) -> str:
    """A short hash of the source code of ``objects`` (functions, classes or modules): put it in a cache key
    so that an entry built by older code is never served after that code changes."""
    h = hashlib.sha256()
    for obj in objects:
        try:
            h.update(inspect.getsource(obj).encode())
        except (OSError, TypeError):  # no source (a builtin, a frozen module): its qualified name stands in
            h.update(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}".encode())
    return h.hexdigest()[:10]


def save_atomically(dataset, target: Path, files: dict[str, str] | None = None) -> None:
    """``dataset.save_to_disk`` into a temporary sibling folder (plus the text ``files`` beside it), then one
    atomic rename to ``target`` (:func:`atomic_path`): parallel builders (pytest workers, two notebooks) can
    never leave a half-written cache, and when another process wins the race its identical copy is kept."""
    target = Path(target)
    with atomic_path(target, folder=True) as tmp:
        dataset.save_to_disk(str(tmp))
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)


@dataclass
class TokenData:
    """Token streams for training: ``train`` and ``val`` are uint8 tensors of byte tokens
    (files joined by a blank line)."""

    train: Tensor
    val: Tensor

    def __post_init__(self) -> None:
        for name in ("train", "val"):
            t = getattr(self, name)
            if not isinstance(t, Tensor) or t.dim() != 1 or t.is_floating_point() or t.dtype == torch.bool:
                raise ValueError(f"{name}: expected a 1-D integer token stream, got {describe(t)}")
            if t.is_meta:
                raise ValueError(f"{name}: expected a token stream with data, got a meta tensor")
            if t.numel() and (int(t.min()) < 0 or int(t.max()) > 255):
                raise ValueError(f"{name}: expected byte tokens in [0, 255], got values in "
                                 f"[{int(t.min())}, {int(t.max())}]")

    def get_batch(self, split: str, batch_size: int, seq_len: int,
                  generator: torch.Generator | None = None, device: str | torch.device = "cpu"):
        """``batch_size`` random windows: ``x [B, T]`` and the next-token targets ``y [B, T]`` (int64)."""
        if split not in ("train", "val"):
            raise ValueError(f"split: expected 'train' or 'val', got {split!r}")
        check_int("batch_size", batch_size, 1)
        check_int("seq_len", seq_len, 1)
        data = self.train if split == "train" else self.val
        if len(data) <= seq_len + 1:
            raise ValueError(f"seq_len: {seq_len} is too long for the {split} split ({len(data)} tokens)")
        starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=generator)
        idx = starts[:, None] + torch.arange(seq_len + 1)  # [B, T+1]
        window = data[idx].long()
        return window[:, :-1].to(device), window[:, 1:].to(device)

    def __repr__(self) -> str:
        return f"TokenData(train={len(self.train):,} tokens, val={len(self.val):,} tokens)"


def _encode_files(batch: dict) -> dict:
    """``Dataset.map`` function (batched): each file's text as its UTF-8 bytes — the :class:`ByteTokenizer`
    ids — as a uint8 array."""
    return {"input_ids": [np.frombuffer(text.encode("utf-8"), dtype=np.uint8) for text in batch["text"]]}


def load_corpus_dataset(cache: Path | None = None):
    """The stdlib corpus as byte tokens: a ``datasets.DatasetDict`` with splits ``train`` and ``val`` (the
    names :class:`TokenData` uses), one row per file, columns ``path`` (str) and ``input_ids`` (the file's
    UTF-8 bytes), formatted ``"torch"``: ``dd["val"][0]["input_ids"]`` is a uint8 tensor ``[n_bytes]``.

    Built by ``Dataset.map`` from :func:`load_stdlib_dataset`. ``datasets`` fingerprints the map (its input
    data and the code of :func:`_encode_files`) and caches the result beside the text in the cache folder,
    so a later call only reads it back; changing the tokenisation gives a new fingerprint, never a stale set.
    """
    import datasets

    text = load_stdlib_dataset(cache)
    splits = datasets.DatasetDict(train=text["train"], val=text["validation"])
    features = datasets.Features({"path": datasets.Value("string"),
                                  "input_ids": datasets.Sequence(datasets.Value("uint8"))})
    tokens = splits.map(_encode_files, batched=True, remove_columns=["text"], features=features)
    return tokens.with_format("torch", columns=["input_ids"], output_all_columns=True, dtype=torch.uint8)


_FILE_SEPARATOR = torch.tensor(list(b"\n\n"), dtype=torch.uint8)  # a blank line between two files


def _join_files(files) -> Tensor:
    """One uint8 token stream from per-file token tensors, a blank line between consecutive files."""
    parts: list[Tensor] = []
    for f in files:
        parts += [_FILE_SEPARATOR, f] if parts else [f]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.uint8)


def load_corpus(cache: Path | None = None) -> TokenData:
    """The stdlib corpus as byte tokens (≈11 M train / ≈1 M validation on CPython 3.11): each split of
    :func:`load_corpus_dataset` with its files joined by a blank line (``"\\n\\n".join`` of the texts, encoded)."""
    dd = load_corpus_dataset(cache)
    return TokenData(train=_join_files(dd["train"]["input_ids"]), val=_join_files(dd["val"]["input_ids"]))


def unigram_entropy(tokens: Tensor, vocab_size: int = 256) -> float:
    """Entropy of the token frequency distribution, in nats: H = −Σ p(x) ln p(x).

    The loss of the best model that ignores context — the bar a language model must get under.
    """
    if not torch.is_tensor(tokens) or tokens.numel() == 0:
        raise ValueError("tokens: expected a non-empty tensor of token ids")
    counts = torch.bincount(tokens.flatten().long(), minlength=vocab_size).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())



# --- exercise (notebook 00) --------------------------------------------------------------------
