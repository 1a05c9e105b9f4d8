"""Data for the fusion notebook: real smartwatch recordings (two modalities) and a driver-distraction
simulator (three modalities, with and without cross-modal interactions).

- :func:`watch_dataset` / :func:`watch_windows` — the 140 smartwatch recordings of ``seglearn==1.2.5``'s
  ``seglearn/data/watch_dataset.npy`` (BSD-3): 10 subjects × 7 shoulder exercises × 2 sides, 6 channels
  at 50 Hz — accelerometer ``ax, ay, az`` (modality 1) and gyroscope ``wx, wy, wz`` (modality 2). Read with
  numpy from the wheel (the package is never imported), cut into non-overlapping windows, summarised
  per window (:data:`WINDOW_FEATURES`) and cached as a Hugging Face dataset; ``watch_windows`` gives numpy.
- :func:`subject_split` — train / test masks that never put one subject on both sides; :func:`watch_splits` —
  the seeded train / validation / test subject split as a ``datasets.DatasetDict`` (what the experiment reads).
- :func:`driver_simulator` — face-, speech- and car-like feature vectors whose binary "distracted" label
  depends on weak unimodal signals plus cross-modal products; ``interactions=False`` is the control.
"""

from __future__ import annotations

import functools

import numpy as np

from kimi_mini.checks import check_int, check_number, describe
from kimi_mini.data import cache_dir, save_atomically
from kimi_mini.sources import package_file

__all__ = ["WATCH", "WATCH_MODALITIES", "WINDOW_FEATURES", "SIM_MODALITIES", "watch_dataset", "watch_windows",
           "watch_splits", "subject_split",
           "standardize", "driver_simulator"]

WATCH = ("seglearn", "1.2.5", "seglearn/data/watch_dataset.npy")
WATCH_MODALITIES = ("accelerometer", "gyroscope")
WINDOW_FEATURES = ("mean", "std", "min", "max", "mean |diff|")  # per axis; + magnitude mean and std
SIM_MODALITIES = ("face", "speech", "car")


def _window_features(w: np.ndarray) -> np.ndarray:
    """``w [T, 3]`` (one window of one sensor) → 17 numbers: 5 statistics per axis + |v| mean and std."""
    mag = np.linalg.norm(w, axis=1)
    per_axis = [w.mean(0), w.std(0), w.min(0), w.max(0), np.abs(np.diff(w, axis=0)).mean(0)]
    return np.concatenate(per_axis + [np.array([mag.mean(), mag.std()])])


def _cut_windows(window: int, hop: int) -> dict[str, list]:
    raw = np.load(package_file(*WATCH), allow_pickle=True).item()  # a dict pickled by numpy, not code
    rows: dict[str, list] = {"accelerometer": [], "gyroscope": [], "label": [], "subject": [], "recording": []}
    for i, (x, y, s) in enumerate(zip(raw["X"], raw["y"], raw["subject"], strict=True)):
        for start in range(0, len(x) - window + 1, hop):
            w = x[start:start + window]
            rows["accelerometer"].append(_window_features(w[:, :3]).astype(np.float32).tolist())
            rows["gyroscope"].append(_window_features(w[:, 3:]).astype(np.float32).tolist())
            rows["label"].append(int(y))
            rows["subject"].append(int(s))
            rows["recording"].append(i)
    return rows


def watch_dataset(window: int = 100, hop: int = 100):
    """The feature windows as a Hugging Face ``datasets.Dataset`` (columns ``accelerometer`` and ``gyroscope``:
    17 floats each; ``label`` 0..6 (ClassLabel with the exercise names), ``subject`` 1..10, ``recording``
    0..139), built once and cached under ``data/cache/seglearn-1.2.5-watch-w<window>-h<hop>``.

    Each recording ``[T, 6]`` is cut into windows of ``window`` samples every ``hop`` samples (100 = 2 s
    at 50 Hz); a window becomes one 17-number summary per sensor (:data:`WINDOW_FEATURES` per axis, then
    the magnitude's mean and std)."""
    if not (isinstance(window, int) and isinstance(hop, int) and window >= 4 and hop >= 1) or \
            isinstance(window, bool) or isinstance(hop, bool):
        raise ValueError(f"window, hop: expected integers window >= 4 and hop >= 1, got {window!r}, {hop!r}")
    import datasets

    datasets.disable_progress_bars()
    target = cache_dir() / f"seglearn-1.2.5-watch-w{window}-h{hop}"
    if not target.exists():
        names = [str(n) for n in np.load(package_file(*WATCH), allow_pickle=True).item()["y_labels"]]
        features = datasets.Features({"accelerometer": datasets.Sequence(datasets.Value("float32")),
                                      "gyroscope": datasets.Sequence(datasets.Value("float32")),
                                      "label": datasets.ClassLabel(names=names), "subject": datasets.Value("int64"),
                                      "recording": datasets.Value("int64")})
        ds = datasets.Dataset.from_dict(_cut_windows(window, hop), features=features)
        save_atomically(ds, target)
    return datasets.load_from_disk(str(target))


@functools.cache
def watch_windows(window: int = 100, hop: int = 100) -> dict[str, np.ndarray]:
    """:func:`watch_dataset` as numpy arrays: ``accelerometer [W, 17]``, ``gyroscope [W, 17]`` (float32),
    ``y [W]`` (exercise 0..6), ``subject [W]`` (1..10), ``recording [W]`` (0..139) and ``labels`` (the 7
    exercise names)."""
    ds = watch_dataset(window, hop)
    cols = ds.with_format("numpy")[:]
    return {"accelerometer": np.asarray(cols["accelerometer"], np.float32),
            "gyroscope": np.asarray(cols["gyroscope"], np.float32), "y": np.asarray(cols["label"]),
            "subject": np.asarray(cols["subject"]), "recording": np.asarray(cols["recording"]),
            "labels": np.asarray(ds.features["label"].names)}


def subject_split(subjects: np.ndarray, n_test: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean ``(train, test)`` masks over ``subjects [W]``: ``n_test`` subjects drawn with ``seed`` go to
    test, every other subject to train — no subject on both sides."""
    if subjects is None or np.asarray(subjects).ndim != 1 or np.asarray(subjects).size == 0:
        raise ValueError(f"subjects: expected a non-empty 1-D array of subject ids, got {describe(subjects)}")
    ids = np.unique(subjects)
    if isinstance(n_test, bool) or not isinstance(n_test, int) or not 1 <= n_test < len(ids):
        raise ValueError(f"n_test: expected an integer in [1, {len(ids) - 1}], got {n_test!r}")
    held = np.random.default_rng(seed).choice(ids, size=n_test, replace=False)
    test = np.isin(subjects, held)
    return ~test, test


def watch_splits(seed: int, n_test: int = 3, window: int = 100, hop: int = 100):
    """The smartwatch windows split by subject as a ``datasets.DatasetDict`` with splits ``train``,
    ``validation`` and ``test``: ``n_test`` test subjects drawn with ``seed`` (:func:`subject_split`), one
    validation subject drawn from the rest with ``seed + 1000``, every other subject train — no subject in two
    splits. Each split is a ``Dataset.select`` of :func:`watch_dataset`'s rows in their stored order (so
    ``datasets`` fingerprints it from the cached set and the indices; nothing is copied), formatted
    ``"torch"``: ``dd["test"][:]["gyroscope"]`` is float32 ``[n, 17]``, ``label`` int64 ``[n]``.
    """
    import datasets

    check_int("seed", seed)
    ds = watch_dataset(window, hop)
    subjects = np.asarray(ds.with_format("numpy")[:]["subject"])
    train, test = subject_split(subjects, n_test=n_test, seed=seed)
    val_subject = np.random.default_rng(seed + 1000).choice(np.unique(subjects[train]))
    val = train & (subjects == val_subject)
    masks = {"train": train & ~val, "validation": val, "test": test}
    dd = datasets.DatasetDict({k: ds.select(np.flatnonzero(m)) for k, m in masks.items()})
    return dd.with_format("torch")


def standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Z-score every array with the mean and std of ``train`` (so nothing leaks from the test side)."""
    if not isinstance(train, np.ndarray) or train.ndim != 2 or len(train) == 0:
        raise ValueError(f"train: expected a non-empty [N, F] array, got {describe(train)}")
    for a in others:
        if not isinstance(a, np.ndarray) or a.ndim != 2 or a.shape[1] != train.shape[1]:
            raise ValueError(f"others: expected [M, {train.shape[1]}] arrays like train, got {describe(a)}")
    mu, sd = train.mean(0), train.std(0) + 1e-6
    return [(a - mu) / sd for a in (train, *others)]


def driver_simulator(n: int, *, interactions: bool = True, seed: int = 0, dim: int = 8, sharpness: float = 20.0,
                     unimodal_weight: float = 0.5, noise: float = 0.3, latent: int = 1
                     ) -> tuple[list[np.ndarray], np.ndarray]:
    """Three-modality driver-distraction windows (a stand-in for the paper's unreleased data).

    Each modality m ∈ (face, speech, car) has ``latent`` informative latents u_m ~ N(0, I) (gaze off the
    road, speech arousal, steering jitter) and two nuisance latents; its ``dim`` observed features are a
    fixed random mixing of them plus Gaussian noise of std ``noise``. With f, s, c the three u_m, the
    label's score is

        t = α Σ(f + s + c) + Σ(f∘s) + Σ(s∘c) + Σ(f∘c) + Σ(f∘s∘c)      (interactions=True, α = unimodal_weight)
        t = Σ(f + s + c)                                                (control: no interactions)

    centred at its median (balanced classes: chance is 0.5), scaled to unit variance and multiplied by
    ``sharpness`` (20: nearly noise-free labels);
    ``y ~ Bernoulli(sigmoid(logit))``. One modality alone sees only the weak α-term; the products are
    invisible to any model that adds per-modality evidence (late fusion, a linear model). The mixing
    matrices are fixed (the same "sensors" for every seed); the samples depend on ``seed``.

    Returns ``([face [n, dim], speech [n, dim], car [n, dim]] float32, y [n] int64)``.
    """
    check_int("n", n, 2, 10**7)
    check_int("latent", latent, 1, 1000)
    check_int("dim", dim, latent + 2, 10**4)
    check_number("sharpness", sharpness, 0, lo_open=True)
    check_number("unimodal_weight", unimodal_weight)
    check_number("noise", noise, 0)
    check_int("seed", seed)
    k = latent
    mixing = np.random.default_rng(12345).standard_normal((3, k + 2, dim)) / np.sqrt(k + 2)  # fixed "sensors"
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((n, 3, k + 2))  # [n, modality, (k informative, 2 nuisance)]
    xs = [(latents[:, m] @ mixing[m] + noise * rng.standard_normal((n, dim))).astype(np.float32) for m in range(3)]
    f, sp, c = (latents[:, m, :k] for m in range(3))  # [n, k] each
    if interactions:
        s = (unimodal_weight * (f + sp + c).sum(1) + (f * sp).sum(1) + (sp * c).sum(1) + (f * c).sum(1)
             + (f * sp * c).sum(1))
    else:
        s = (f + sp + c).sum(1)
    logit = sharpness * (s - np.median(s)) / s.std()  # median-centred: balanced classes
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return xs, y
