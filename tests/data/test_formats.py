"""Each reader on tiny files written in-test: what it reads, and how it refuses bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from genrec.data.dataset import build_dataset
from genrec.data.formats import FORMATS, read
from genrec.data.formats.amazon import k_core
from genrec.errors import ConfigError, DataError


def write(path: Path, text: str | bytes, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text if isinstance(text, bytes) else text.encode(encoding)
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def seqs(raw) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for user, item, _ in raw.interactions:
        out.setdefault(user, []).append(item)
    return out


# --- tiny valid datasets, one per format (also reused by the bad-input tests) ---------------

def make_lcrec(d: Path) -> Path:
    write(d / "Toy.inter.json", json.dumps({"u1": [2, 0, 1], "u2": [1, 2, 0, 1]}))
    write(d / "Toy.item.json", json.dumps({
        "0": {"title": "Kettle", "description": "Boils water", "brand": "Acme", "categories": "Home,Kitchen"},
        "1": {"title": "Mug", "description": "", "brand": "", "categories": ["Home", "Cups"], "color": "red"},
        "2": {"title": "Tea", "description": "Green", "brand": "Leafy", "categories": ""},
    }, indent=2))
    return d


def make_p5(d: Path) -> Path:
    write(d / "user_sequence.txt", "A x1 x2 x3\nB x3 x1 x2 x1\n\n")
    write(d / "item_titles.txt", "x1 red lipstick\nx2 face cream large\nx3\n")
    return d


def make_ml100k(d: Path) -> Path:
    write(d / "u.data", "1\t10\t5\t300\n1\t20\t3\t100\n1\t30\t4\t200\n"
          "2\t10\t2\t50\n2\t20\t4\t60\n2\t30\t5\t70\n")
    flags = {"10": [0, 1, 0], "20": [0, 0, 1], "30": [0, 1, 1]}
    titles = {"10": "Amélie (2001)", "20": "Heat (1995)", "30": "Up (2009)"}
    lines = [f"{i}|{titles[i]}|01-Jan-{titles[i][-5:-1]}||http://x/{i}|" + "|".join(map(str, f))
             for i, f in flags.items()]
    write(d / "u.item", "\n".join(lines) + "\n", encoding="latin-1")
    write(d / "u.genre", "unknown|0\nAction|1\nDrama|2\n\n")
    return d


def make_recbole(d: Path) -> Path:
    write(d / "toy.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
          "1\t7\t4\t30\n1\t8\t3\t10\n1\t9\t5\t20\n2\t9\t1\t5\n2\t7\t2\t6\n2\t8\t2\t7\n")
    write(d / "toy.item", "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
          "7\tToy Story\t1995\tAnimation Comedy\n8\tHeat\t1995\tAction Crime\n9\tUp\t2009\t\n")
    return d


def make_amazon(d: Path) -> Path:
    reviews = [("u1", "a", 30), ("u1", "b", 10), ("u1", "c", 20),
               ("u2", "a", 5), ("u2", "b", 5), ("u2", "c", 9)]
    write(d / "reviews_Toy_5.json.gz", "".join(
        json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": t, "overall": 5.0}) + "\n"
        for u, i, t in reviews))
    meta = [{"asin": "a", "title": "Soap &amp; <b>Co</b>", "brand": "Suds",
             "description": "<p>Gentle</p>  soap", "categories": [["Beauty", "Bath"], ["Beauty", "Soap"]]},
            {"asin": "b", "title": "Brush", "categories": [["Beauty"]]},
            {"asin": "c", "title": "Comb", "price": 3.5}]
    write(d / "meta_Toy.json.gz", "".join(repr(m) + "\n" for m in meta))
    return d


def make_table(d: Path) -> Path:
    write(d / "interactions.csv", "user_id,item_id,timestamp,rating\nu1,i2,20,5\nu1,i1,10,4\nu1,i3,30,3\n"
          "u2,i3,2021-01-02,1\nu2,i1,2021-01-01T00:00:00,2\nu2,i2,2021-01-03,3\n")
    write(d / "items.csv", 'item_id,title,categories,price\ni1,"Red, big",A|B,3\ni2,Blue,,4\ni3,Green,C,\n')
    return d


MAKERS = {"lcrec": make_lcrec, "p5": make_p5, "movielens": make_ml100k, "recbole": make_recbole,
          "amazon": make_amazon, "table": make_table}


# --- registry and options ----------------------------------------------------------------

def test_every_format_has_a_maker() -> None:
    assert set(MAKERS) == set(FORMATS)


def test_unknown_format() -> None:
    with pytest.raises(ConfigError, match="unknown format 'csv'.*table"):
        read("csv", ".")


@pytest.mark.parametrize("fmt", sorted(MAKERS))
def test_unknown_option_names_it_and_lists_valid(fmt: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown option\(s\) 'colour'.*valid options: .*encoding"):
        read(fmt, MAKERS[fmt](tmp_path), colour="red")


def test_option_types_are_converted_and_checked(tmp_path: Path) -> None:
    d = make_ml100k(tmp_path)
    raw = read("movielens", d, min_rating="4")
    assert raw.counts["interactions_below_min_rating_dropped"] == 2
    with pytest.raises(ConfigError, match="min_rating='high'.*must be of type float"):
        read("movielens", d, min_rating="high")
    with pytest.raises(ConfigError, match="k_core=2.5.*must be of type int"):
        read("amazon", make_amazon(tmp_path / "amz"), k_core=2.5)


# --- lcrec -------------------------------------------------------------------------------

def test_lcrec_keeps_order_and_maps_text(tmp_path: Path) -> None:
    raw = read("lcrec", make_lcrec(tmp_path))
    assert seqs(raw) == {"u1": ["2", "0", "1"], "u2": ["1", "2", "0", "1"]}
    assert all(ts is None for _, _, ts in raw.interactions)
    assert raw.items["0"].categories == ["Home", "Kitchen"]
    assert raw.items["1"].categories == ["Home", "Cups"] and raw.items["1"].extra == {"color": "red"}
    assert raw.items["2"].categories == [] and raw.items["0"].brand == "Acme"
    ds = build_dataset(raw)
    assert ds.timestamps is None and ds.item_ids(ds.sequences[1]) == ["1", "2", "0", "1"]


@pytest.mark.parametrize("which", ["dir", "Toy.inter.json", "Toy.item.json"])
def test_lcrec_accepts_directory_or_either_file(tmp_path: Path, which: str) -> None:
    d = make_lcrec(tmp_path)
    raw = read("lcrec", d if which == "dir" else d / which)
    assert len(raw.interactions) == 7


def test_lcrec_several_datasets_need_name(tmp_path: Path) -> None:
    d = make_lcrec(tmp_path)
    write(d / "Other.inter.json", json.dumps({"z": [0, 1, 2]}))
    write(d / "Other.item.json", json.dumps({str(i): {"title": f"t{i}"} for i in range(3)}))
    with pytest.raises(DataError, match="several .*Other.inter.json, Toy.inter.json.*--opt name"):
        read("lcrec", d)
    assert seqs(read("lcrec", d, name="Other")) == {"z": ["0", "1", "2"]}


def test_lcrec_identical_duplicate_ok_conflict_named(tmp_path: Path) -> None:
    d = tmp_path
    write(d / "T.inter.json", '{"u": [0, 0, 0]}')
    write(d / "T.item.json", '{\n"0": {"title": "A"},\n"0": {"title": "A"}\n}')
    assert read("lcrec", d).counts["item_duplicates_identical"] == 1
    write(d / "T.item.json", '{\n"0": {"title": "A"},\n"1": {"title": "B"},\n"0": {"title": "C"}\n}')
    with pytest.raises(DataError, match=r"T.item.json: item id '0' appears twice .*line 2 and line 4"):
        read("lcrec", d)


def test_lcrec_malformed_json_reports_line(tmp_path: Path) -> None:
    d = make_lcrec(tmp_path)
    write(d / "Toy.inter.json", '{\n  "u1": [0, 1, 2],\n  "u2": [0, 1 2]\n}')
    with pytest.raises(DataError, match=r"Toy.inter.json line 3 column \d+: not valid JSON"):
        read("lcrec", d)
    write(d / "Toy.inter.json", '{"u1": "0 1 2"}')
    with pytest.raises(DataError, match="user 'u1' must map to a list"):
        read("lcrec", d)


# --- p5 ----------------------------------------------------------------------------------

def test_p5_sequences_titles_and_empty_text(tmp_path: Path) -> None:
    raw = read("p5", make_p5(tmp_path))
    assert seqs(raw) == {"A": ["x1", "x2", "x3"], "B": ["x3", "x1", "x2", "x1"]}
    assert raw.items["x2"].title == "face cream large" and raw.items["x3"].title == ""
    ds = build_dataset(raw)
    assert ds.stats["items_without_text"] == 1 and ds.items[ds.item_index["x3"]].title == "x3"


def test_p5_item_file_option_and_no_item_file(tmp_path: Path) -> None:
    d = make_p5(tmp_path)
    write(d / "names.txt", "x1 One\nx2 Two\nx3 Three\n")
    assert read("p5", d / "user_sequence.txt", item_file="names.txt").items["x3"].title == "Three"
    assert read("p5", d, item_file="none").items is None
    (d / "item_titles.txt").unlink()
    assert read("p5", d).items is None
    with pytest.raises(DataError, match=r"nope.txt does not exist .*--opt item_file=nope.txt"):
        read("p5", d, item_file="nope.txt")


# --- movielens ---------------------------------------------------------------------------

def test_movielens_100k_genres_dates_and_latin1(tmp_path: Path) -> None:
    raw = read("movielens", make_ml100k(tmp_path))
    assert raw.filters["layout"] == "ml-100k"
    amelie = raw.items["10"]
    assert amelie.title == "Amélie (2001)" and amelie.categories == ["Action"]
    assert amelie.extra == {"release_date": "01-Jan-2001", "year": 2001, "url": "http://x/10"}
    assert raw.items["30"].categories == ["Action", "Drama"]
    ds = build_dataset(raw)
    assert ds.item_ids(ds.sequences[0]) == ["20", "30", "10"]  # sorted by timestamp
    assert list(ds.timestamps[0]) == [100.0, 200.0, 300.0]


def test_movielens_1m_layout(tmp_path: Path) -> None:
    write(tmp_path / "ratings.dat", "1::1::5::978300760\n1::2::3::978302109\n1::1::4::978301968\n")
    write(tmp_path / "movies.dat", "1::Toy Story (1995)::Animation|Children's|Comedy\n"
          "2::Jumanji (1995)::Adventure\n", encoding="latin-1")
    raw = read("movielens", tmp_path / "ratings.dat", min_rating=4)
    assert raw.filters["layout"] == "ml-1m" and seqs(raw) == {"1": ["1", "1"]}
    assert raw.items["1"].categories == ["Animation", "Children's", "Comedy"]
    assert raw.items["1"].extra == {"year": 1995}


def test_movielens_latest_layout(tmp_path: Path) -> None:
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n")
    write(tmp_path / "movies.csv", 'movieId,title,genres\n'
          '1,"American President, The (1995)",Comedy|Drama|Romance\n'
          "3,Some Film (2018),(no genres listed)\n")
    raw = read("movielens", tmp_path)
    assert raw.filters["layout"] == "ml-latest"
    assert raw.items["1"].title == "American President, The (1995)" and raw.items["3"].categories == []
    assert raw.interactions == [("1", "1", 964982703.0), ("1", "3", 964981247.0)]


def test_movielens_bad_lines(tmp_path: Path) -> None:
    d = make_ml100k(tmp_path)
    write(d / "u.data", "1\t10\t5\t300\n1\t20\t3\n")
    with pytest.raises(DataError, match=r"u.data line 2: expected 4 fields"):
        read("movielens", d)
    write(d / "u.data", "1\t10\tfive\t300\n")
    with pytest.raises(DataError, match=r"u.data line 1: rating 'five' is not a number"):
        read("movielens", d)


# --- recbole -----------------------------------------------------------------------------

def test_recbole_typed_columns_map_to_fields(tmp_path: Path) -> None:
    raw = read("recbole", make_recbole(tmp_path))
    toy = raw.items["7"]
    assert toy.title == "Toy Story" and toy.categories == ["Animation", "Comedy"]
    assert toy.extra == {"release_year": "1995"} and raw.items["9"].categories == []
    ds = build_dataset(raw)
    assert ds.item_ids(ds.sequences[0]) == ["8", "9", "7"] and ds.item_ids(ds.sequences[1]) == ["9", "7", "8"]


def test_recbole_overrides_and_no_time_column(tmp_path: Path) -> None:
    d = make_recbole(tmp_path)
    raw = read("recbole", d / "toy.item", time_col="none", categories_col="none", title_col="release_year")
    assert seqs(raw)["1"] == ["7", "8", "9"] and all(t is None for *_, t in raw.interactions)
    assert raw.items["8"].title == "1995" and raw.items["8"].categories == []
    assert raw.items["8"].extra == {"movie_title": ["Heat"], "class": ["Action", "Crime"]}
    with pytest.raises(DataError, match=r"column 'uid' not found "
                       r"\(columns: user_id, item_id, rating, timestamp\).*--opt user_col="):
        read("recbole", d, user_col="uid")
    (d / "toy.item").unlink()
    assert read("recbole", d).items is None


def test_recbole_wrong_field_count(tmp_path: Path) -> None:
    d = make_recbole(tmp_path)
    write(d / "toy.inter", "user_id:token\titem_id:token\n1\t2\n1\t2\t3\n")
    with pytest.raises(DataError, match=r"toy.inter line 3: 3 tab-separated field\(s\) but the header has 2"):
        read("recbole", d)


# --- amazon ------------------------------------------------------------------------------

def test_amazon_2014_literal_meta_html_and_order(tmp_path: Path) -> None:
    raw = read("amazon", make_amazon(tmp_path), k_core=0)
    assert raw.filters["release"] == 2014
    soap = raw.items["a"]
    assert soap.title == "Soap & Co" and soap.description == "Gentle soap" and soap.brand == "Suds"
    assert soap.categories == ["Beauty", "Bath", "Soap"] and raw.items["c"].extra == {"price": 3.5}
    ds = build_dataset(raw)
    assert ds.item_ids(ds.sequences[0]) == ["b", "c", "a"]
    assert ds.item_ids(ds.sequences[1]) == ["a", "b", "c"]  # a and b tie at t=5: file order kept


def test_amazon_2018_json_meta_plain_files(tmp_path: Path) -> None:
    rows = [("u", "p", 3), ("u", "q", 1), ("u", "p", 3), ("u", "p", 4)]
    write(tmp_path / "Tools_5.json", "".join(
        json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": t}) + "\n" for u, i, t in rows))
    write(tmp_path / "meta_Tools.json", json.dumps(
        {"asin": "p", "title": "Saw", "description": ["Sharp", "<br>steel"], "category": ["Tools", "Saws"],
         "main_cat": "Tools &amp; Home"}) + "\n" + json.dumps({"asin": "q", "title": "Hammer"}) + "\n")
    raw = read("amazon", tmp_path, k_core=0)
    assert raw.filters["release"] == 2018 and raw.counts["duplicate_interactions_dropped"] == 1
    assert raw.items["p"].description == "Sharp steel" and raw.items["p"].categories == ["Tools", "Saws"]
    assert raw.items["p"].extra == {"main_cat": "Tools & Home"}
    assert sorted(raw.interactions) == [("u", "p", 3.0), ("u", "p", 4.0), ("u", "q", 1.0)]


def test_amazon_k_core_iterates_until_stable() -> None:
    rows = [("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 1), ("u2", "b", 2), ("u3", "a", 3), ("u3", "c", 4),
            ("u4", "c", 5)]
    kept, counts = k_core(rows, 2)
    # u4 goes first, which leaves c with one user, then u3 with one item.
    assert kept == rows[:4]
    assert counts == {"kcore_users_removed": 2, "kcore_items_removed": 1, "kcore_interactions_removed": 3}
    assert k_core(rows, 1)[0] == rows and k_core(rows, 0)[1]["kcore_interactions_removed"] == 0


def test_amazon_meta_is_never_evaluated(tmp_path: Path) -> None:
    d = make_amazon(tmp_path)
    write(d / "meta_Toy.json.gz", "{'asin': 'a'}\n__import__('os').system('echo pwned')\n")
    with pytest.raises(DataError, match=r"meta_Toy.json.gz line 2: neither JSON nor a Python literal"):
        read("amazon", d)


def test_amazon_truncated_gzip(tmp_path: Path) -> None:
    d = make_amazon(tmp_path)
    data = (d / "reviews_Toy_5.json.gz").read_bytes()
    (d / "reviews_Toy_5.json.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"reviews_Toy_5.json.gz: the compressed file is truncated"):
        read("amazon", d)


def test_amazon_review_without_required_key(tmp_path: Path) -> None:
    d = make_amazon(tmp_path)
    write(d / "reviews_Toy_5.json.gz", '{"reviewerID": "u", "asin": "a"}\n')
    with pytest.raises(DataError, match=r"line 1: review lacks unixReviewTime"):
        read("amazon", d)


# --- table -------------------------------------------------------------------------------

def test_table_csv_with_items_and_iso_dates(tmp_path: Path) -> None:
    raw = read("table", make_table(tmp_path))
    assert raw.items["i1"].title == "Red, big" and raw.items["i1"].categories == ["A", "B"]
    assert raw.items["i1"].extra == {"price": "3"} and raw.items["i3"].extra == {}
    ds = build_dataset(raw)
    assert ds.item_ids(ds.sequences[0]) == ["i1", "i2", "i3"]
    assert ds.item_ids(ds.sequences[1]) == ["i1", "i3", "i2"]
    assert ds.timestamps[1][0] == 1609459200.0  # 2021-01-01 UTC


def test_table_tsv_custom_columns_sep_and_missing_values(tmp_path: Path) -> None:
    write(tmp_path / "log.tsv", "uid\tiid\n1\t5\n1\t6\n\t7\n1\t5\n")
    raw = read("table", tmp_path / "log.tsv", user_col="uid", item_col="iid")
    assert raw.interactions == [("1", "5", None), ("1", "6", None), ("1", "5", None)]
    assert raw.counts["rows_missing_values_dropped"] == 1 and raw.items is None
    write(tmp_path / "log.dat", "uid\tiid\n1\t5\n")
    assert read("table", tmp_path / "log.dat", sep="\\t", user_col="uid", item_col="iid").interactions == [
        ("1", "5", None)]  # a literal backslash-t, as typed on a command line
    write(tmp_path / "u.data", "1\t5\t4\t30\n1\t6\t3\t20\n")
    assert read("table", tmp_path / "u.data", header="false", user_col=0, item_col=1, time_col=3,
                sep="\\t").interactions == [("1", "5", 30.0), ("1", "6", 20.0)]
    write(tmp_path / "log.txt", "uid;iid;when\n1;5;3\n")
    assert read("table", tmp_path / "log.txt", sep=";", user_col="uid", item_col="iid",
                time_col="when").interactions == [("1", "5", 3.0)]


def test_table_parquet(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    pd.DataFrame({"user_id": [1, 1, 2], "item_id": [10, 11, 10],
                  "timestamp": pd.to_datetime(["2020-01-02", "2020-01-01", "2020-01-03"])}
                 ).to_parquet(tmp_path / "interactions.parquet")
    pd.DataFrame({"item_id": [10, 11], "title": ["Ten", "Eleven"], "categories": [["x", "y"], []]}
                 ).to_parquet(tmp_path / "items.parquet")
    raw = read("table", tmp_path)
    assert raw.interactions[1] == ("1", "11", 1577836800.0)
    assert raw.items["10"].categories == ["x", "y"] and raw.items["11"].title == "Eleven"


def test_table_missing_column_lists_found(tmp_path: Path) -> None:
    d = make_table(tmp_path)
    with pytest.raises(DataError, match=r"column 'user' \(option user_col\) not found; columns found: "
                       r"user_id, item_id, timestamp, rating; set --opt user_col=COLUMN"):
        read("table", d, user_col="user")
    with pytest.raises(DataError, match=r"items.csv: column 'name' \(option title_col\) not found"):
        read("table", d, title_col="name")
    with pytest.raises(DataError, match=r"line 5: time 'soon' in column 'timestamp'"):
        write(d / "interactions.csv", "user_id,item_id,timestamp\nu,a,1\nu,b,2\nu,c,3\nu,d,soon\n")
        read("table", d)


# --- bad input shared by every format ----------------------------------------------------

@pytest.mark.parametrize("fmt", sorted(MAKERS))
def test_empty_directory_says_what_files_are_expected(fmt: str, tmp_path: Path) -> None:
    expected = {"lcrec": "inter.json", "p5": "user_sequence.txt", "movielens": "u.data",
                "recbole": "NAME.inter", "amazon": "reviews_X_5.json.gz", "table": "interactions"}[fmt]
    with pytest.raises(DataError, match=expected):
        read(fmt, tmp_path)


MISSING_SECOND_FILE = {"lcrec": ("Toy.item.json", "Toy.item.json does not exist"),
                       "movielens": ("u.item", "found u.data but not u.item"),
                       "amazon": ("meta_Toy.json.gz", "meta_Toy.json.gz .*not found")}


@pytest.mark.parametrize("fmt", sorted(MISSING_SECOND_FILE))
def test_missing_companion_file(fmt: str, tmp_path: Path) -> None:
    name, message = MISSING_SECOND_FILE[fmt]
    d = MAKERS[fmt](tmp_path)
    (d / name).unlink()
    with pytest.raises(DataError, match=message):
        read(fmt, d)


# (file to corrupt, bytes written with a bad byte on line 2)
BAD_UTF8 = {
    "lcrec": ("Toy.item.json", b'{\n"0": {"title": "caf\xe9"}}'),
    "p5": ("item_titles.txt", b"x1 ok\nx2 caf\xe9\n"),
    "recbole": ("toy.item", b"item_id:token\tmovie_title:token_seq\n7\tcaf\xe9\n"),
    "amazon": ("meta_Toy.json.gz", b"{'asin': 'a'}\n{'asin': 'caf\xe9'}\n"),
    "table": ("items.csv", b"item_id,title\ni1,caf\xe9\n"),
}


@pytest.mark.parametrize("fmt", sorted(BAD_UTF8))
def test_non_utf8_byte_is_located(fmt: str, tmp_path: Path) -> None:
    name, data = BAD_UTF8[fmt]
    offset = data.index(b"\xe9")
    d = MAKERS[fmt](tmp_path)
    write(d / name, data)
    with pytest.raises(DataError, match=rf"{name} line 2, byte offset[^:]* {offset}: "
                       r"byte 0xe9 is not valid utf-8.*--opt encoding=") as e:
        read(fmt, d)
    assert "latin-1" in str(e.value)
    read(fmt, d, encoding="latin-1")  # the suggested fix works


def test_movielens_latest_non_utf8_and_100k_latin1_default(tmp_path: Path) -> None:
    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,9\n")
    write(tmp_path / "movies.csv", b"movieId,title,genres\n1,Am\xe9lie (2001),Drama\n")
    with pytest.raises(DataError, match=r"movies.csv line 2, byte offset 25: byte 0xe9.*--opt encoding="):
        read("movielens", tmp_path)
    assert read("movielens", tmp_path, encoding="latin-1").items["1"].title == "Amélie (2001)"


# (file, content with a malformed line 3, expected message)
MALFORMED = {
    "lcrec": ("Toy.item.json", '{\n"0": {"title": "a"},\n"1": {"title": "b",}\n}',
              r"line 3 column \d+: not valid JSON"),
    "p5": None,  # every whitespace-separated line is valid P5
    "movielens": ("u.item", "10|A (2001)|01-Jan-2001||u|0|1|0\n20|B|||u|0|0|1\n30|C|||u|0|1\n",
                  r"u.item line 3: expected 8 '\|'-separated fields"),
    "recbole": ("toy.item", "item_id:token\tmovie_title:token_seq\n7\tA\n8\tB\textra\n",
                r"toy.item line 3: 3 tab-separated field\(s\)"),
    "amazon": ("reviews_Toy_5.json.gz",
               '{"reviewerID": "u", "asin": "a", "unixReviewTime": 1}\n\n{"reviewerID": "u", "asin": }\n',
               r"reviews_Toy_5.json.gz line 3: not valid JSON"),
    "table": ("interactions.csv", "user_id,item_id,timestamp\nu,a,1\nu,b,2,9\n",
              r"interactions.csv line 3: 4 field\(s\) but the header has 3"),
}


@pytest.mark.parametrize("fmt", sorted(k for k, v in MALFORMED.items() if v))
def test_malformed_line_is_reported_with_its_number(fmt: str, tmp_path: Path) -> None:
    name, content, message = MALFORMED[fmt]
    d = MAKERS[fmt](tmp_path)
    write(d / name, content)
    with pytest.raises(DataError, match=message):
        read(fmt, d)


def test_table_bad_csv_quoting(tmp_path: Path) -> None:
    d = make_table(tmp_path)
    write(d / "items.csv", 'item_id,title\ni1,"two\nlines"\ni2,B\n')
    assert read("table", d).items["i1"].title == "two\nlines"  # quoted line breaks are data
    write(d / "items.csv", 'item_id,title\ni1,"ok"\ni2,"bad"x"\n')
    with pytest.raises(DataError, match=r"items.csv line 3"):
        read("table", d)


# (file, content whose line 3 repeats line 1's id with other text)
CONFLICT = {
    "p5": ("item_titles.txt", "x1 red\nx2 blue\nx1 green\n"),
    "movielens": ("u.item", "10|A|||u|0|1|0\n20|B|||u|0|0|1\n10|A2|||u|0|1|0\n"),
    "recbole": ("toy.item", "item_id:token\tmovie_title:token_seq\n7\tA\n8\tB\n7\tC\n"),
    "amazon": ("meta_Toy.json.gz",
               "{'asin': 'a', 'title': 'A'}\n{'asin': 'b'}\n{'asin': 'a', 'title': 'Z'}\n"),
    "table": ("items.csv", "item_id,title\ni1,A\ni2,B\ni1,C\n"),
}


@pytest.mark.parametrize("fmt", sorted(CONFLICT))
def test_conflicting_duplicate_item_names_id_and_both_lines(fmt: str, tmp_path: Path) -> None:
    name, content = CONFLICT[fmt]
    d = MAKERS[fmt](tmp_path)
    write(d / name, content)
    first = 2 if fmt in ("recbole", "table") else 1  # header lines shift the numbers
    with pytest.raises(DataError, match=rf"{name}: item id '\w+' appears twice with different text "
                       rf"\(line {first} and line {first + 2}\)"):
        read(fmt, d)
    lines = content.splitlines()
    write(d / name, "\n".join(lines[:-1] + [lines[first - 1]]) + "\n")  # an identical repeat is fine
    assert read(fmt, d).counts["item_duplicates_identical"] == 1
