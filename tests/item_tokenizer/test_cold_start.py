"""Cold-start assignment: new items get unique codes, existing items keep theirs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from itok_synthetic import blobs

from genrec.cli import main as cli
from genrec.config import load_config
from genrec.data.dataset import Item
from genrec.errors import DataError
from genrec.item_tokenizer.artifact import load_item_tokenizer
from genrec.item_tokenizer.build import build_tokenizer
from genrec.item_tokenizer.cold_start import assign_new_items, semantic_neighbors
from genrec.item_tokenizer.config import TokenizerConfig


def _built(tmp: Path, data: Path | None, n: int = 60, *overrides: str) -> Path:
    np.save(tmp / "sem.npy", blobs(n, 12, 6, seed=1)[0])
    np.save(tmp / "beh.npy", blobs(n, 6, 4, seed=2)[0])
    cfg = load_config(TokenizerConfig, None, [
        "name=tok", f"out_dir={tmp / 'out'}", "progress=false", "plots=false",
        *( [f"data={data}"] if data else []),
        "semantic.encoder=precomputed", f"semantic.embeddings={tmp / 'sem.npy'}",
        "semantic.kmeans.k=8", "semantic.kmeans.depth=auto",
        "behavior.encoder=precomputed", f"behavior.embeddings={tmp / 'beh.npy'}", "behavior.kmeans.k=8",
        "cold_start.neighbors=5", *overrides])
    return build_tokenizer(cfg)


def test_new_items_get_unique_codes_and_the_artifact_is_versioned(tmp_path, dataset_dir):
    out = _built(tmp_path, dataset_dir)
    before = load_item_tokenizer(out)
    sem = np.load(tmp_path / "sem.npy")
    beh = np.load(tmp_path / "beh.npy")
    new = [Item("twin7", title="space opera volume 7 (again)"), Item("other", title="something new")]
    emb = np.stack([sem[7], blobs(1, 12, 1, seed=9)[0][0]])
    codes = assign_new_items(out, new, semantic_embeddings=emb, progress=False)

    after = load_item_tokenizer(out, dataset=dataset_dir)  # the dataset itself did not change
    assert after.version == 2 and after.stats["num_items"] == 62 and after.stats["num_build_items"] == 60
    assert after.stats["unique_rate"] == 1.0 and after.stats["cold_start"][-1]["items"] == 2
    # same text embedding as it7 -> same semantic codes; the index as a whole stays unique
    assert codes["twin7"][:2] == before.item_tokens["it7"][:2]
    assert len({after.index(i) for i in after.item_ids}) == 62
    # existing items keep codes, token ids stay where they were
    assert all(after.item_tokens[i] == before.item_tokens[i] for i in before.item_ids)
    assert after.tokens[:len(before.tokens)] == before.tokens
    assert after.item_ids[-2:] == ["twin7", "other"] and after.item_tokens["twin7"] == codes["twin7"]
    # embeddings grew by the new rows: given semantic, neighbour-mean behavior
    assert after.embeddings("semantic").shape == (62, 12)
    assert np.allclose(after.embeddings("semantic")[60], sem[7])
    nb = semantic_neighbors(sem[7][None], sem, 5, before.tree("semantic").preprocess)[0]
    assert nb[0] == 7
    assert np.allclose(after.embeddings("behavior")[60], beh[nb].mean(axis=0), atol=1e-6)
    assert (out / "new_items.jsonl").read_text().count("\n") == 2
    assert "something new" in after.titles().values()

    with pytest.raises(DataError, match="already exist"):
        assign_new_items(out, [Item("it3")], semantic_embeddings=sem[:1], progress=False)
    assert load_item_tokenizer(out).version == 2  # a refused assignment changes nothing


def test_a_twin_in_a_leaf_with_room_gets_a_free_last_code(tmp_path, dataset_dir):
    out = _built(tmp_path, dataset_dir, 60, "order=[semantic]")
    tok = load_item_tokenizer(out)
    sem = np.load(tmp_path / "sem.npy")
    leaf_of = {}
    for item, toks in tok.item_tokens.items():
        leaf_of.setdefault(toks[0], []).append(item)
    small = next(items for items in leaf_of.values() if len(items) == 7)  # 60 = 4*7 + 4*8 items
    twin = small[0]
    i = tok.item_ids.index(twin)
    codes = assign_new_items(out, [Item("twin")], semantic_embeddings=sem[i:i + 1], progress=False)
    assert codes["twin"][0] == tok.item_tokens[twin][0] and codes["twin"][1] == "<s1_7>"
    full = next(items for items in leaf_of.values() if len(items) == 8)
    j = tok.item_ids.index(full[0])
    with pytest.raises(DataError, match="every code under its index prefix is taken"):
        assign_new_items(out, [Item("twin2")], semantic_embeddings=sem[j:j + 1], progress=False)


def test_disambiguated_groups_take_the_next_number(tmp_path):
    out = _built(tmp_path, None, 40, "order=[semantic]", "semantic.kmeans.method=residual",
                 "semantic.kmeans.k=2", "semantic.kmeans.depth=2")
    tok = load_item_tokenizer(out)
    assert tok.stats["disambiguated_items"] == 40  # 4 codes for 40 items: every index is shared
    sem = np.load(tmp_path / "sem.npy")
    codes = assign_new_items(out, [Item("n1"), Item("n2")], semantic_embeddings=sem[[0, 0]], progress=False)
    group = [t for i, t in tok.item_tokens.items() if t[:2] == tok.item_tokens["0"][:2]]
    assert codes["n1"][:2] == codes["n2"][:2] == tok.item_tokens["0"][:2]
    assert codes["n1"][2] == f"<d_{len(group)}>" and codes["n2"][2] == f"<d_{len(group) + 1}>"
    after = load_item_tokenizer(out)
    assert after.stats["unique_rate"] == 1.0 and after.tokens[:len(tok.tokens)] == tok.tokens


def test_cli_assign_with_precomputed_embeddings(tmp_path, dataset_dir, capsys):
    out = _built(tmp_path, dataset_dir)
    sem = np.load(tmp_path / "sem.npy")
    items = tmp_path / "new.jsonl"
    items.write_text(json.dumps({"item_id": "n1", "title": "brand new", "color": "red",
                                 "embedding": sem[3].tolist()}) + "\n")
    assert cli(["tokens", "assign", "--tokenizer", str(out), "--items", str(items)]) == 0
    printed = capsys.readouterr().out
    assert "brand new" in printed and "version 2" in printed
    rec = json.loads((out / "new_items.jsonl").read_text())
    assert rec["extra"] == {"color": "red"}
    items.write_text(json.dumps({"item_id": "n2", "title": "no vector"}) + "\n")
    assert cli(["tokens", "assign", "--tokenizer", str(out), "--items", str(items)]) == 2
    assert "precomputed semantic embeddings" in capsys.readouterr().err
    items.write_text('{"title": "no id"}\n')
    assert cli(["tokens", "assign", "--tokenizer", str(out), "--items", str(items)]) == 2
    assert "line 1" in capsys.readouterr().err


def test_a_build_with_held_out_items_codes_them_as_new_items(tmp_path, dataset_dir):
    from genrec.data.dataset import Dataset
    from genrec.data.split import cold_item_mask

    out = _built(tmp_path, dataset_dir, 60, "cold_start.cold_items=0.2", "cold_start.cold_seed=3")
    ds = Dataset.load(dataset_dir)
    cold = cold_item_mask(ds.num_items, 0.2, 3)
    held = [ds.items[i].item_id for i in np.flatnonzero(cold)]
    tok = load_item_tokenizer(out, dataset=dataset_dir)
    load_item_tokenizer(out, dataset=ds)  # the loaded dataset is accepted too: same items, other order
    assert len(held) == 12 and tok.stats["num_build_items"] == 48 and tok.version == 2
    assert tok.item_ids[-12:] == held and sorted(tok.item_ids) == sorted(it.item_id for it in ds.items)
    assert tok.stats["cold_start"][-1]["items"] == 12 and tok.stats["unique_rate"] == 1.0
    # the build clustered the other 48; the held-out ones kept their text vectors and took the
    # mean behavior vector of their nearest built neighbours, never their own row
    sem, beh = np.load(tmp_path / "sem.npy"), np.load(tmp_path / "beh.npy")
    assert np.allclose(tok.embeddings("semantic")[:48], sem[~cold])
    assert np.allclose(tok.embeddings("semantic")[48:], sem[cold])
    assert np.allclose(tok.embeddings("behavior")[:48], beh[~cold])
    nb = semantic_neighbors(sem[cold][:1], sem[~cold], 5, tok.tree("semantic").preprocess)[0]
    assert np.allclose(tok.embeddings("behavior")[48], beh[~cold][np.sort(nb)].mean(axis=0), atol=1e-6)


def test_held_out_items_need_the_dataset_and_the_semantic_stream(tmp_path, dataset_dir):
    from genrec.errors import ConfigError

    with pytest.raises(ConfigError, match="needs the dataset"):
        _built(tmp_path, None, 60, "cold_start.cold_items=0.2")
    with pytest.raises(ConfigError, match="needs the semantic stream"):
        _built(tmp_path, dataset_dir, 60, "cold_start.cold_items=0.2", "order=[behavior]")
    with pytest.raises(ConfigError, match=r"cold_items must be in \[0, 1\)"):
        _built(tmp_path, dataset_dir, 60, "cold_start.cold_items=1.0")
    assert not (tmp_path / "out" / "tok").exists()


def test_without_held_out_items_the_loaded_dataset_is_checked_in_build_order(tmp_path, dataset_dir):
    from genrec.data.dataset import Dataset

    out = _built(tmp_path, dataset_dir)
    sem = np.load(tmp_path / "sem.npy")
    assign_new_items(out, [Item("later", title="added after the build")], semantic_embeddings=sem[:1], progress=False)
    ds = Dataset.load(dataset_dir)
    load_item_tokenizer(out, dataset=ds)  # the built items, in order; the assigned one is extra
    shuffled = Dataset(items=ds.items[::-1], users=ds.users, sequences=ds.sequences)
    with pytest.raises(DataError, match="differ from the 60 items"):
        load_item_tokenizer(out, dataset=shuffled)
