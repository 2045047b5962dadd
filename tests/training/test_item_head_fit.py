"""Fitting the item head of a trained model: bad input is one clear error."""

from types import SimpleNamespace

import pytest
import torch

from genrec.errors import DataError
from genrec.training.item_head import prefix_states


def test_prefix_states_give_each_next_item_its_prompt_state_and_last_item():
    class Model(torch.nn.Module):  # the state of position p is the token id there
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(100, 1)

        def get_input_embeddings(self):
            return self.emb

        def forward(self, inputs_embeds, output_hidden_states):
            return SimpleNamespace(hidden_states=[inputs_embeds])

    model = Model()
    model.emb.weight.data = torch.arange(100.0)[:, None]
    render = lambda h: ([50, *h], ([], []))
    states, targets, recent = prefix_states(model, render, [[1, 2, 3], [7], [4, 5]], max_history=20, progress=False,
                                            recent=2)
    assert targets.tolist() == [2, 3, 5] and recent.tolist() == [[1, -1], [2, 1], [4, -1]]
    assert states[:, 0].tolist() == [1.0, 2.0, 4.0]


def test_no_transition_to_learn_is_a_clear_error():
    with pytest.raises(DataError, match="no training sequence has two items"):
        prefix_states(None, lambda h: ([1], ([], [])), [[3], [], [5]], max_history=20, progress=False)


def test_weight_rule_one_se_takes_the_lightest_option_the_validation_users_cannot_tell_apart():
    import numpy as np

    from genrec.training.item_head import choose_option

    rng = np.random.default_rng(0)
    codes = rng.random(2000) * (rng.random(2000) < 0.3)  # [U] per-user NDCG@10 of the codes alone
    light = codes + 0.05 * (np.arange(2000) < 400)  # weight 2: +0.01 on average, a clear gain
    swing = np.zeros(2000)
    swing[:52], swing[52:100] = 0.05, -0.05  # weight 4: 52 users gain, 48 lose: +0.0001, SE 0.00025
    gains = {(0, 0.0): codes, (0, 2.0): light, (0, 4.0): light + swing, (1, 4.0): light + 2 * swing}
    assert choose_option(gains, "best") == (1, 4.0)
    assert choose_option(gains, "one_se") == (0, 2.0)
    # a clear gain is kept; equal means go to the lighter weight, then the earlier epoch
    assert choose_option({(0, 0.0): codes, (0, 8.0): light}, "one_se") == (0, 8.0)
    assert choose_option({(1, 2.0): codes, (0, 2.0): codes, (0, 4.0): codes}, "best") == (0, 2.0)
    with pytest.raises(DataError, match="weight rule must be one of"):
        choose_option({(0, 0.0): codes}, "median")


def test_user_ndcg_averages_to_the_ranking_metric():
    import numpy as np

    from genrec.metrics import ranking_metrics, user_ndcg

    ranked = np.array([[1, 2, 3], [3, 2, 1], [5, 6, 7], [-1, -1, -1]])
    targets = np.array([2, 1, 9, 4])
    per_user = user_ndcg(ranked, targets, 3)
    np.testing.assert_allclose(per_user, [1 / np.log2(3), 0.5, 0.0, 0.0])
    assert per_user.mean() == pytest.approx(ranking_metrics(ranked, targets, (3,))["ndcg@3"])
