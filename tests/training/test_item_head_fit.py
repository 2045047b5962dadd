"""Fitting the item head of a trained model: bad input is one clear error."""

import pytest

from genrec.errors import DataError
from genrec.training.item_head import prefix_states


def test_no_transition_to_learn_is_a_clear_error():
    with pytest.raises(DataError, match="no training sequence has two items"):
        prefix_states(None, lambda h: ([1], ([], [])), [[3], [], [5]], max_history=20, progress=False)
