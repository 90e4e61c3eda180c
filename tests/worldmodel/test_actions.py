"""Action spaces: out-of-range actions are clear errors (worldmodel/actions.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from games.crafter.actions import CRAFTER_ACTIONS
from worldmodel.actions import ActionError, get_action_space

CRAFTER = get_action_space("crafter")


def test_crafter_space_has_the_17_game_actions():
    assert CRAFTER.n == CRAFTER.dim == 17
    assert CRAFTER.index("noop") == 0 and CRAFTER.index("make_iron_sword") == 16
    assert CRAFTER.index(5) == 5 and CRAFTER.index(np.int64(5)) == 5


@pytest.mark.parametrize("bad", [17, -1, 100, 2.5])
def test_index_out_of_range_names_the_action_and_the_range(bad):
    with pytest.raises(ActionError, match=r"out of range for crafter \(0\.\.16\)"):
        CRAFTER.index(bad)


def test_index_unknown_name_lists_known_names():
    with pytest.raises(ActionError, match="unknown action 'fly'.*move_left"):
        CRAFTER.index("fly")


def test_validate_reports_the_bad_values():
    np.testing.assert_array_equal(CRAFTER.validate([0, 16, 3]), [0, 16, 3])
    assert CRAFTER.validate(np.zeros(0, np.int64)).size == 0
    with pytest.raises(ActionError, match=r"\[-1, 17\]"):
        CRAFTER.validate([0, 17, -1, 3])
    with pytest.raises(ActionError, match="out of range"):
        CRAFTER.validate(np.array([1.5]))


def test_encode_is_one_hot():
    enc = CRAFTER.encode(torch.tensor([[0, 16]]))
    assert enc.shape == (1, 2, 17)
    assert enc.sum(-1).eq(1).all() and enc[0, 1, 16] == 1


def test_minecraft_space_checks_buttons_and_camera():
    mc = get_action_space("minecraft")
    ok = np.zeros((2, mc.dim), np.float32)
    ok[0, 0], ok[1, -1] = 1, -30
    mc.validate(ok)
    with pytest.raises(ActionError, match="last dim 11"):
        mc.validate(np.zeros((2, 5)))
    bad = ok.copy()
    bad[0, 1] = 0.5
    with pytest.raises(ActionError, match="0 or 1"):
        mc.validate(bad)
    bad = ok.copy()
    bad[0, -2] = 31
    with pytest.raises(ActionError, match="camera"):
        mc.validate(bad)
    assert mc.encode(torch.tensor(ok))[1, -1] == -1.0


def test_unknown_space_is_an_error():
    with pytest.raises(ActionError, match="unknown action space 'doom'"):
        get_action_space("doom")
    assert len(CRAFTER_ACTIONS) == 17
