"""The denoiser network: shapes, the zero-init residual, causality, the KV cache
(worldmodel/dynamics.py)."""

from __future__ import annotations

import torch

from conftest import smooth_frames
from worldmodel.dynamics import Denoiser, KVCache, attention_mask


def inputs(cfg, b: int = 2, n: int = 4, seed: int = 0):
    """Random network inputs for n frames at random levels with random actions."""
    s = cfg.model.frame_size
    gen = torch.Generator().manual_seed(seed)
    x = smooth_frames((b, n, 3, s, s), seed)
    prev = smooth_frames((b, n, 3, s, s), seed + 1)
    t = torch.rand(b, n, generator=gen)
    t_prev = torch.rand(b, n, generator=gen)
    has_prev = torch.ones(b, n, dtype=torch.bool)
    act = torch.nn.functional.one_hot(torch.randint(0, 17, (b, n), generator=gen), 17).float()
    drop = torch.rand(b, n, generator=gen) < 0.3
    return dict(x=x, prev=prev, t=t, t_prev=t_prev, has_prev=has_prev, act=act, act_drop=drop)


def test_output_is_frames_shaped(tiny_cfg, perturbed_model):
    model = perturbed_model(tiny_cfg)
    inp = inputs(tiny_cfg, b=2, n=5)
    with torch.no_grad():
        out = model(**inp)
    assert out.shape == (2, 5, 3, 16, 16)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_fresh_model_returns_its_anchor_exactly(tiny_cfg):
    torch.manual_seed(0)
    model = Denoiser(tiny_cfg.model)
    inp = inputs(tiny_cfg)
    with torch.no_grad():
        assert torch.equal(model(**inp), inp["prev"])  # the anchor defaults to prev
        anchor = smooth_frames((2, 1, 3, 16, 16), seed=9)
        assert torch.equal(model(**inp, anchor=anchor), anchor.expand(2, 4, -1, -1, -1))
        inp["has_prev"][:, 0] = False  # no frame before: the residual is added to nothing
        out = model(**inp)
    assert torch.equal(out[:, 0], torch.zeros_like(out[:, 0]))
    assert torch.equal(out[:, 1:], inp["prev"][:, 1:])


def test_perturbed_model_is_not_a_copy(tiny_cfg, perturbed_model):
    """Guards the tests that rely on perturbed weights: outputs depend on x, t and the action."""
    model = perturbed_model(tiny_cfg)
    inp = inputs(tiny_cfg)
    with torch.no_grad():
        out = model(**inp)
        assert (out - inp["prev"]).abs().mean() > 1e-2
        for key in ("x", "t", "act"):
            changed = dict(inp, **{key: inp[key].flip(0)})
            assert not torch.allclose(model(**changed), out), key


def test_frames_do_not_see_the_future(tiny_cfg, perturbed_model):
    model = perturbed_model(tiny_cfg)
    inp = inputs(tiny_cfg, n=5)
    with torch.no_grad():
        out = model(**inp)
        later = dict(inp, x=inp["x"].clone())
        later["x"][:, 3:] = -later["x"][:, 3:]
        out_later = model(**later)
        earlier = dict(inp, x=inp["x"].clone())
        earlier["x"][:, 0] = -earlier["x"][:, 0]
        out_earlier = model(**earlier)
    assert torch.equal(out_later[:, :3], out[:, :3])
    assert not torch.allclose(out_later[:, 3:], out[:, 3:])
    # ...but they do see the past through temporal attention (frame 0 is no frame's prev here)
    assert not torch.allclose(out_earlier[:, 2], out[:, 2])


def test_commit_fills_the_cache_and_slides_it(tiny_cfg, perturbed_model):
    model = perturbed_model(tiny_cfg)
    cache = KVCache(max_len=3)
    with torch.no_grad():
        assert model(**inputs(tiny_cfg, n=2), cache=cache, commit=True) is None
        assert cache.pos == 2 and cache.positions.tolist() == [0, 1]
        model(**inputs(tiny_cfg, n=2, seed=1), cache=cache, commit=True)
    assert cache.pos == 4 and cache.positions.tolist() == [1, 2, 3]
    names = {n for n, _ in model.temporal_layers()}
    assert len(cache.layers) == len(names) > 0
    for lc in cache.layers.values():
        assert lc.k.shape[0] % 2 == 0 and lc.k.shape[2] == 3 and lc.v.shape == lc.k.shape
    cache.reset()
    assert cache.pos == 0 and not cache.layers and cache.positions.numel() == 0


def test_cached_forward_matches_one_long_forward(tiny_cfg, perturbed_model):
    """Committing frames 0..3 and then predicting frames 4..5 equals predicting them in one
    causal call over all six (where frames 0..3 are inputs at the same levels)."""
    model = perturbed_model(tiny_cfg)
    inp = inputs(tiny_cfg, n=6)
    head = {k: v[:, :4] for k, v in inp.items()}
    tail = {k: v[:, 4:] for k, v in inp.items()}
    cache = KVCache(max_len=8)
    with torch.no_grad():
        full = model(**inp)
        model(**head, cache=cache, commit=True)
        part = model(**tail, cache=cache)
    torch.testing.assert_close(part, full[:, 4:], atol=1e-5, rtol=1e-5)


def test_attention_mask_sees_cache_before_chunk_and_chunk_causally():
    # two cached frames (positions 0, 1), then a chunk of three frames at 2..4 that opens at 2
    q = torch.tensor([2, 3, 4])
    keys = torch.tensor([0, 1, 2, 3, 4])
    m = attention_mask(q, torch.tensor([2, 2, 2]), keys, n_cached=2, window=8)
    assert m.int().tolist() == [[1, 1, 1, 0, 0],
                                [1, 1, 1, 1, 0],
                                [1, 1, 1, 1, 1]]
    # the window drops keys more than `window` frames back
    m = attention_mask(q, torch.tensor([2, 2, 2]), keys, n_cached=2, window=2)
    assert m.int().tolist() == [[1, 1, 1, 0, 0],
                                [0, 1, 1, 1, 0],
                                [0, 0, 1, 1, 1]]
    # training layout: cached context at 0..3, targets at 1..3 each opening its own chunk, so a
    # target sees only the context strictly before it, plus itself
    q = torch.tensor([1, 2, 3])
    keys = torch.tensor([0, 1, 2, 3, 1, 2, 3])
    m = attention_mask(q, q, keys, n_cached=4, window=8)
    assert m.int().tolist() == [[1, 0, 0, 0, 1, 0, 0],
                                [1, 1, 0, 0, 0, 1, 0],
                                [1, 1, 1, 0, 0, 0, 1]]
