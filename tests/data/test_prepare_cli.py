"""``genrec data prepare`` end to end: outputs, cleaning counts, clean failures, real datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genrec.cli import main
from genrec.data.dataset import Dataset


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def make_lcrec(d: Path) -> Path:
    write(d / "Toy.inter.json", json.dumps({"u1": [2, 0, 1], "u2": [1, 2, 0, 1]}))
    titles = ["Kettle", "Mug", "Tea"]
    write(d / "Toy.item.json", json.dumps({str(i): {"title": t} for i, t in enumerate(titles)}))
    return d


def make_p5(d: Path) -> Path:
    write(d / "user_sequence.txt", "A x1 x2 x3\nB x3 x1 x2 x1\n")
    write(d / "item_titles.txt", "x1 red lipstick\nx2 face cream\nx3 soap\n")
    return d


def make_table(d: Path) -> Path:
    write(d / "interactions.csv", "user_id,item_id,timestamp\nu1,i2,20\nu1,i1,10\nu1,i3,30\n"
          "u2,i3,2\nu2,i1,1\nu2,i2,3\n")
    write(d / "items.csv", 'item_id,title,categories\ni1,"Red, big",A|B\ni2,Blue,\ni3,Green,C\n')
    return d


def prepare(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["data", "prepare", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_prepare_writes_the_canonical_directory(tmp_path: Path, capsys) -> None:
    raw = make_table(tmp_path / "raw")
    rc, out, err = prepare(capsys, "--format", "table", "--path", str(raw), "--out", str(tmp_path / "ds"))
    assert rc == 0, err
    assert "2 users / 3 items / 6 interactions" in out
    ds = Dataset.load(tmp_path / "ds")
    assert ds.users == ["u1", "u2"] and ds.item_ids(ds.sequences[0]) == ["i1", "i2", "i3"]
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["format"] == "table" and manifest["config"]["format"] == "table"
    assert set(manifest["inputs"]) == {str(raw / "interactions.csv"), str(raw / "items.csv")}
    assert all(len(h) == 64 for h in manifest["inputs"].values())
    assert "numpy" in manifest["versions"]


def test_opt_values_are_taken_literally(tmp_path: Path, capsys) -> None:
    # '|' and ';' would not survive YAML parsing; reader options must arrive verbatim.
    write(tmp_path / "log.txt", "u;i;t\n1;a;1\n1;b;2\n1;c;3\n")
    write(tmp_path / "items.txt", "i;name;tags\na;A;x|y\nb;B;y\nc;C;\n")
    rc, _, err = prepare(capsys, "--format", "table", "--path", str(tmp_path / "log.txt"), "--out",
                         str(tmp_path / "ds"), "--opt", "sep=;", "--opt", "user_col=u", "--opt", "item_col=i",
                         "--opt", "time_col=t", "--opt", "items_path=items.txt", "--opt", "title_col=name",
                         "--opt", "categories_col=tags", "--opt", "categories_sep=|")
    assert rc == 0, err
    ds = Dataset.load(tmp_path / "ds")
    assert ds.items[ds.item_index["a"]].categories == ["x", "y"] and ds.items[0].title == "A"


def test_imperfect_data_is_cleaned_and_counted(tmp_path: Path, capsys) -> None:
    write(tmp_path / "user_sequence.txt", "A x1 x2 x3 x9\nB x1 x2\nC x3 x1 x2 x1\nD x2\n")
    write(tmp_path / "item_titles.txt", "x1 red\nx2 blue\nx3\nx4 never bought\n")
    rc, _, err = prepare(capsys, "--format", "p5", "--path", str(tmp_path), "--out", str(tmp_path / "ds"))
    assert rc == 0, err
    stats = json.loads((tmp_path / "ds" / "stats.json").read_text())
    assert stats["interactions_unknown_item_dropped"] == 1  # x9
    assert stats["users_too_short_dropped"] == 2 and stats["interactions_of_short_users_dropped"] == 3
    assert stats["items_without_interactions_dropped"] == 1  # x4
    assert stats["items_without_text"] == 1  # x3 keeps its id as title
    assert (stats["users"], stats["items"], stats["interactions"]) == (2, 3, 7)
    assert Dataset.load(tmp_path / "ds").items[2].title == "x3"

    rc, _, err = prepare(capsys, "--format", "p5", "--path", str(tmp_path), "--out", str(tmp_path / "ds2"),
                         "--min-user-interactions", "2", "--keep-cold-items")
    stats = json.loads((tmp_path / "ds2" / "stats.json").read_text())
    assert rc == 0 and (stats["users"], stats["items"], stats["users_too_short_dropped"]) == (3, 4, 1)

    rc, _, err = prepare(capsys, "--format", "p5", "--path", str(tmp_path), "--out", str(tmp_path / "ds3"),
                         "--strict")
    assert rc == 2 and "1 interaction(s) refer to items absent from the item table (e.g. ['x9'])" in err
    assert not (tmp_path / "ds3").exists()


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """name → (prepare arguments, expected fragment of the error line)."""
    lc = make_lcrec(tmp / "lc")
    p5 = make_p5(tmp / "p5")
    tb = make_table(tmp / "tb")
    bad_json = make_lcrec(tmp / "bad_json")
    write(bad_json / "Toy.inter.json", '{\n"u1": [0, 1, 2],\n"u2": [0 1]\n}')
    dup = make_p5(tmp / "dup")
    write(dup / "item_titles.txt", "x1 red\nx2 blue\nx3 green\nx2 navy\n")
    latin = make_p5(tmp / "latin")
    write(latin / "item_titles.txt", b"x1 ok\nx2 ok\nx3 caf\xe9\n")
    bad_csv = make_table(tmp / "bad_csv")
    write(bad_csv / "interactions.csv", "user_id,item_id\nu,a\nu,b\nu\n")
    (tmp / "empty").mkdir()
    return {
        "missing path": (["--format", "p5", "--path", str(tmp / "nope")], "nope does not exist"),
        "missing files": (["--format", "lcrec", "--path", str(tmp / "empty")], "NAME.inter.json"),
        "malformed json": (["--format", "lcrec", "--path", str(bad_json)], "Toy.inter.json line 3 column"),
        "malformed csv": (["--format", "table", "--path", str(bad_csv)],
                          "interactions.csv line 4: 1 field(s)"),
        "duplicate item": (["--format", "p5", "--path", str(dup)],
                           "item id 'x2' appears twice with different text (line 2 and line 4)"),
        "non-utf8": (["--format", "p5", "--path", str(latin)], "item_titles.txt line 3, byte offset 18"),
        "unknown option": (["--format", "lcrec", "--path", str(lc), "--opt", "colour=red"], "'colour'"),
        "bad option value": (["--format", "p5", "--path", str(p5), "--opt", "encoding=klingon"], "klingon"),
        "bad opt syntax": (["--format", "table", "--path", str(tb), "--opt", "sep"], "key=value"),
        "unknown format": (["--format", "csv", "--path", str(tb)], "unknown format 'csv'"),
    }


@pytest.mark.parametrize("case", ["missing path", "missing files", "malformed json", "malformed csv",
                                  "duplicate item", "non-utf8", "unknown option", "bad option value",
                                  "bad opt syntax", "unknown format"])
def test_failures_exit_2_with_one_clear_line_and_no_output(case: str, tmp_path: Path, capsys) -> None:
    args, fragment = _bad_inputs(tmp_path / "raw")[case]
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    rc, _, err = prepare(capsys, *args, "--out", str(out_parent / "ds"))
    assert rc == 2
    assert "Traceback" not in err
    error_lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(error_lines) == 1 and fragment in error_lines[0], err
    assert list(out_parent.iterdir()) == []  # neither the output nor a temporary sibling


def test_failure_leaves_an_existing_output_untouched(tmp_path: Path, capsys) -> None:
    good = make_table(tmp_path / "good")
    out = tmp_path / "ds"
    assert prepare(capsys, "--format", "table", "--path", str(good), "--out", str(out))[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = make_table(tmp_path / "bad")
    write(bad / "items.csv", "item_id,title\ni1,A\ni1,B\n")
    rc, _, err = prepare(capsys, "--format", "table", "--path", str(bad), "--out", str(out))
    assert rc == 2 and "appears twice" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "ds", "good"]


REAL = [("scientific", "lcrec", "", (8317, 4344, 58492)),
        ("beauty", "p5", "", (22363, 12101, 198502)),
        ("ml-100k", "movielens", "", (943, 1682, 100000))]


@pytest.mark.parametrize("name,fmt,sub,expected", REAL, ids=[r[0] for r in REAL])
def test_real_dataset_counts(name: str, fmt: str, sub: str, expected: tuple[int, int, int], tmp_path: Path,
                             shared_datasets: Path, capsys) -> None:
    rc, _, err = prepare(capsys, "--format", fmt, "--path", str(shared_datasets / name), "--out",
                           str(tmp_path / name))
    assert rc == 0, err
    stats = json.loads((tmp_path / name / "stats.json").read_text())
    assert (stats["users"], stats["items"], stats["interactions"]) == expected
    assert stats["users_too_short_dropped"] == 0 and stats["interactions_unknown_item_dropped"] == 0
    ds = Dataset.load(tmp_path / name)
    assert sum(len(s) for s in ds.sequences) == expected[2]
