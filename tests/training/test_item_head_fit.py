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
