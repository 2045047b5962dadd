"""GenRecommender: loading a trained run, valid top-k, filters, batches, clear errors."""

import logging
import math

import numpy as np
import pytest
import torch

from genrec.errors import DataError, RequestError
from genrec.inference.recommender import GenRecommender, RecommendRequest

HISTORY = ["m1", "m3", "m5"]


def ids(recs):
    return [r.item_id for r in recs]


def test_top_k_distinct_valid_items_with_titles_and_descending_scores(rec):
    recs = rec.recommend(HISTORY, k=7)
    catalog = {it.item_id: it.title for it in rec.items}
    assert len(recs) == 7 and len(set(ids(recs))) == 7
    assert all(r.item_id in catalog and r.title == catalog[r.item_id] for r in recs)
    scores = [r.score for r in recs]
    assert all(math.isfinite(s) for s in scores) and scores == sorted(scores, reverse=True)
    assert recs[0].to_dict().keys() == {"item_id", "title", "score"}


def test_score_is_the_exact_log_probability_of_the_item(rec):
    best = rec.recommend(HISTORY, k=3)[0]
    prompt = rec.prepare({"history": HISTORY}).prompt
    i = rec._by_id[best.item_id]
    toks = rec.tokenizer.convert_tokens_to_ids(list(_codes(rec, i))) + [rec.tokenizer.eos_token_id]
    with torch.no_grad():
        logp = torch.log_softmax(rec.model(input_ids=torch.tensor([prompt + toks])).logits[0].float(), -1)
    exact = float(logp[torch.arange(len(prompt) - 1, len(prompt) + len(toks) - 1), torch.tensor(toks)].sum())
    assert best.score == pytest.approx(exact, abs=1e-3)


def _codes(rec, i):
    import re

    return re.findall(r"<[^>]+>", rec.index[i])


def test_titles_resolve_like_ids_and_long_histories_keep_the_most_recent(rec):
    by_title = rec.recommend(["film 1 drama", "m3", "film 5 action"], k=5)
    assert ids(by_title) == ids(rec.recommend(HISTORY, k=5))
    long = [f"m{i}" for i in range(20)]  # max_history of the tiny run is 8
    assert rec.max_history == 8
    assert ids(rec.recommend(long, k=5)) == ids(rec.recommend(long[-8:], k=5))


def test_exclude_allow_where(rec):
    got = rec.recommend(HISTORY, k=10, exclude="history")
    assert len(got) == 10 and not set(ids(got)) & set(HISTORY)
    got = rec.recommend(HISTORY, k=10, exclude=["m0", "film 2 action"])
    assert not set(ids(got)) & {"m0", "m2"}
    allow = ["m4", "m9", "m11"]
    assert sorted(ids(rec.recommend(HISTORY, k=10, allow=allow))) == sorted(allow)  # fewer allowed than k
    comedy = rec.recommend(HISTORY, k=5, where={"categories": "Comedy"})
    assert len(comedy) == 5 and all(rec.items[rec._by_id[i]].categories == ["Comedy"] for i in ids(comedy))
    recent = rec.recommend(HISTORY, k=20, where={"year": {"ge": 2010}}, exclude="history")
    assert sorted(ids(recent), key=lambda s: int(s[1:])) == [f"m{i}" for i in range(20, 24)]


def test_batch_equals_one_by_one(rec):
    reqs = [RecommendRequest(HISTORY, k=5), {"history": ["m7"], "k": 3, "exclude": "history"},
            RecommendRequest(["m2", "m4"], k=4, where={"categories": ["Drama", "Action"]}),
            RecommendRequest(["m2"], k=25)]  # clamped to the 24 items: its own beam width, own group
    batch = rec.recommend_batch(reqs)
    for req, got in zip(reqs, batch):
        req = req if isinstance(req, dict) else vars(req)
        alone = rec.recommend(**req)
        assert ids(got) == ids(alone)
        assert np.allclose([r.score for r in got], [r.score for r in alone], atol=1e-4)
    assert len(batch[3]) == 24


def test_instruction_changes_the_prompt(rec):
    plain = rec.prepare({"history": HISTORY}).prompt
    custom = rec.prepare({"history": HISTORY, "instruction": "Suggest a film after {history} please."}).prompt
    text = rec.tokenizer.decode(custom)
    assert custom != plain and "please" in text and rec.index[1] in text.replace(" ", "")
    prefixed = rec.tokenizer.decode(rec.prepare({"history": HISTORY, "instruction": "Be brief."}).prompt)
    assert "Be brief." in prefixed and rec.index[5] in prefixed.replace(" ", "")
    assert len(rec.recommend(HISTORY, k=3, instruction="Suggest a film after {titles}")) == 3


@pytest.mark.parametrize("kwargs, match", [
    ({"history": []}, "history is empty"),
    ({"history": ["m1", "nope", "zilch"]}, "'nope', 'zilch'"),
    ({"history": "m1"}, "must be a list"),
    ({"history": HISTORY, "k": 0}, "k must be an integer >= 1"),
    ({"history": HISTORY, "k": 5, "num_beams": 3}, "num_beams=3 must be an integer >= k=5"),
    ({"history": HISTORY, "exclude": "seen"}, "exclude must be 'history'"),
    ({"history": HISTORY, "allow": ["m1", "ghost"]}, "allow: unknown item id"),
    ({"history": HISTORY, "where": {"colour": "red"}}, "'colour' is unknown"),
    ({"history": HISTORY, "where": {"year": {"ge": "soon"}}}, "needs a number"),
])
def test_bad_requests_raise_clear_errors(rec, kwargs, match):
    with pytest.raises(RequestError, match=match):
        rec.recommend(**kwargs)


def test_unknown_ids_are_all_named(rec):
    with pytest.raises(RequestError) as e:
        rec.recommend(["m1", "x1", "x2"])
    assert e.value.field == "history" and e.value.values == ["x1", "x2"]


def test_k_above_catalog_is_clamped_with_a_warning(rec, caplog):
    with caplog.at_level(logging.WARNING, logger="genrec.inference.recommender"):
        got = rec.recommend(HISTORY, k=100)
    assert len(got) == rec.num_items == 24 and "exceeds the catalog" in caplog.text


def test_load_errors_name_the_fix(tiny_run, tmp_path):
    with pytest.raises(DataError, match="--data DIR"):
        GenRecommender.from_pretrained(tiny_run, data_dir=tmp_path / "moved")
    with pytest.raises(DataError, match="not a finished genrec run"):
        GenRecommender.from_pretrained(tmp_path)


def test_unmerged_adapter_gives_the_same_ranking(tiny_run, rec):
    unmerged = GenRecommender.from_pretrained(tiny_run, device="cpu", merge=False)
    a, b = rec.recommend(HISTORY, k=6), unmerged.recommend(HISTORY, k=6)
    assert ids(a) == ids(b) and np.allclose([r.score for r in a], [r.score for r in b], atol=1e-3)


def test_qlora_run_is_served_on_float_weights(tmp_path):
    from genrec.testing import make_tiny_run

    run = make_tiny_run(tmp_path, steps=2, mode="qlora")
    q = GenRecommender.from_pretrained(run, device="cpu")
    kinds = {type(m).__name__ for m in q.model.modules()}
    assert "Linear4bit" not in kinds and q.model.dtype == torch.float32
    got = q.recommend(HISTORY, k=4)
    assert len({r.item_id for r in got}) == 4



def test_training_and_serving_prompts_are_one_rendering(rec):
    """The served prompt is the training prompt for the same history: the ``seqrec`` phrasing
    requests are served with, and a ``{titles}`` instruction, long titles cut alike."""
    import dataclasses

    from genrec.data.dataset import Dataset
    from genrec.inference.recommender import GenRecommender
    from genrec.item_tokenizer.artifact import item_codes, load_item_tokenizer
    from genrec.tasks.prompts import SERVING_TEMPLATE, TEMPLATES, TaskBuilder

    ds = Dataset.load(rec.data_dir)
    codes = item_codes(load_item_tokenizer(rec.run_dir / "item_tokenizer"), ds)
    items = [dataclasses.replace(it, title=f"{it.title} " + "with a very long subtitle " * 6) for it in ds.items]
    served = GenRecommender(rec.model, rec.tokenizer, items, codes, max_history=rec.max_history)
    builder = TaskBuilder(items, codes, rec.max_history, seed=0)
    history = list(range(len(items)))[:rec.max_history + 3]  # longer than max_history: both keep the last ones
    titles_template = TEMPLATES["fusion_titles"][0]
    for task, template, instruction in (("seqrec", SERVING_TEMPLATE, None),
                                        ("fusion_titles", titles_template, titles_template)):
        builder._pick = lambda _task, t=template: t  # the phrasing drawn for the example
        trained = builder.make(task, history, 0).prompt
        assert served.prompt_text(history, instruction) == trained
    assert "…" in trained and len(items[0].title) > 80
    assert SERVING_TEMPLATE == TEMPLATES["seqrec"][0]
