"""Atomic writes: a failed write leaves the previous file (or nothing) and no temporary file."""

from __future__ import annotations

import pytest

from genrec.io import atomic_dir, atomic_file, read_json, write_json


def test_atomic_file_replaces_on_success_and_keeps_old_on_failure(tmp_path):
    path = tmp_path / "sub" / "out.json"
    write_json(path, {"a": 1})
    assert read_json(path) == {"a": 1}

    with pytest.raises(RuntimeError), atomic_file(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert read_json(path) == {"a": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.json"]

    with atomic_file(path) as tmp:
        assert tmp.parent == path.parent and tmp != path
        tmp.write_text('{"a": 2}')
    assert read_json(path) == {"a": 2}
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.json"]


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "artifact"
    with pytest.raises(ValueError), atomic_dir(final) as tmp:
        (tmp / "x").write_text("partial")
        raise ValueError("bad input")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(final) as tmp:
        (tmp / "x").write_text("done")
    assert (final / "x").read_text() == "done" and [p.name for p in tmp_path.iterdir()] == ["artifact"]
