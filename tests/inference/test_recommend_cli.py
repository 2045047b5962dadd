"""`genrec recommend`: table and JSON output, exit status 2 with one clear line on bad input."""

import json

from genrec.cli import main as cli


def test_json_output_matches_the_python_api(tiny_run, rec, capsys):
    assert cli(["recommend", "--model", str(tiny_run), "--history", "m1", "m3", "-k", "4", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [set(r) for r in got] == [{"item_id", "title", "score"}] * 4
    want = rec.recommend(["m1", "m3"], k=4)
    assert [r["item_id"] for r in got] == [r.item_id for r in want]


def test_table_with_exclude_history_and_where(tiny_run, capsys):
    assert cli(["recommend", "--model", str(tiny_run), "--history", "m1", "film 3 comedy", "-k", "3",
                "--exclude-history", "--where", '{"categories": "Comedy"}']) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].split() == ["rank", "score", "item_id", "title"] and len(lines) == 4
    assert all(line.endswith("comedy") for line in lines[1:]) and " m3 " not in out


def test_unknown_id_exits_2_naming_it(tiny_run, capsys):
    assert cli(["recommend", "--model", str(tiny_run), "--history", "m1", "no-such-item", "-k", "3"]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: history: unknown") and "'no-such-item'" in last and "Traceback" not in err
    assert cli(["recommend", "--model", str(tiny_run), "--history", "m1", "--where", "{oops"]) == 2
    assert "--where is not valid JSON" in capsys.readouterr().err
    assert cli(["recommend", "--model", str(tiny_run.parent / "nope"), "--history", "m1"]) == 2
    assert "not a finished genrec run" in capsys.readouterr().err


def test_serve_and_evaluate_are_registered():
    from genrec.cli import build_parser

    a = build_parser().parse_args(["serve", "--model", "RUN", "--port", "9000", "--max-batch", "4"])
    assert (a.handler, a.port, a.max_batch, a.max_wait_ms) == ("genrec.inference.http:main", 9000, 4, 10.0)
    a = build_parser().parse_args(["evaluate", "--model", "R", "--data", "D", "--out", "O",
                                   "--baselines", "B1", "B2"])
    assert (a.handler, a.split, a.num_beams, a.baselines) == ("genrec.inference.evaluate:main", "test", 20, ["B1", "B2"])
