"""The denoiser network: shapes, the zero-init residual, causality, the KV cache
(worldmodel/dynamics.py)."""

from __future__ import annotations

import pytest
import torch

from conftest import smooth_frames
from worldmodel.dynamics import Conditioning, Denoiser, KVCache, ShiftHead, attention_mask, shift_image

SHIFT = pytest.mark.parametrize("shift", [0, 5], ids=["anchor", "shifted_anchor"])


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


@SHIFT
def test_output_is_frames_shaped(tiny_config, perturbed_model, shift):
    tiny_cfg = tiny_config(f"model.shift_kernel={shift}")
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
        assert torch.equal(model(**inp, conditioning=Conditioning(anchor=anchor)), anchor.expand(2, 4, -1, -1, -1))
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


@SHIFT
def test_frames_do_not_see_the_future(tiny_config, perturbed_model, shift):
    tiny_cfg = tiny_config(f"model.shift_kernel={shift}")
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


@SHIFT
def test_cached_forward_matches_one_long_forward(tiny_config, perturbed_model, shift):
    """Committing frames 0..3 and then predicting frames 4..5 equals predicting them in one
    causal call over all six (where frames 0..3 are inputs at the same levels)."""
    tiny_cfg = tiny_config(f"model.shift_kernel={shift}")
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


def test_shift_image_moves_by_whole_pixels_with_edges_replicated():
    x = smooth_frames((3, 3, 8, 8), seed=4)
    k = torch.zeros(3, 5, 5)
    k[0, 2, 2] = 1  # centre: identity
    k[1, 2, 4] = 1  # two columns right of centre: the image moves two pixels left
    k[2, 1, 2] = 0.5  # half a pixel row up, half the identity
    k[2, 2, 2] = 0.5
    y = shift_image(x, k)
    assert torch.equal(y[0], x[0])
    assert torch.equal(y[1][..., :-2], x[1][..., 2:])
    assert torch.equal(y[1][..., -2:], x[1][..., -1:].expand(-1, -1, 2))
    torch.testing.assert_close(y[2][:, 1:], 0.5 * (x[2][:, 1:] + x[2][:, :-1]))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a copy stays exact under autocast
        y = shift_image(x, k)
    assert y.dtype == torch.float32 and torch.equal(y[1][..., :-2], x[1][..., 2:])


def test_shift_head_learns_a_translation_from_its_near_identity_start():
    """From the fresh start (uniform kernel, mask ~0.02) gradient descent finds the move: the
    kernel peaks at the offset that maps anchor onto target, and the mask opens."""
    torch.manual_seed(0)
    head = ShiftHead(c_bottleneck=8, c_top=4, kernel=7, patch=1)
    anchor = smooth_frames((4, 3, 16, 16), seed=1)
    target = shift_image(anchor, torch.nn.functional.one_hot(torch.tensor(7 * 3 + 5), 49)
                         .float().view(1, 7, 7).expand(4, -1, -1))  # two pixels: x + 2
    h = torch.randn(4, 8, 2, 2)
    top = torch.randn(4, 4, 16, 16)
    opt = torch.optim.Adam(head.parameters(), lr=3e-2)
    first = None
    for _ in range(60):
        loss = (head(anchor, head.kernels(h), top) - target).pow(2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    k = head.kernels(h)
    assert (k.flatten(1).argmax(1) == 7 * 3 + 5).all()
    assert loss.item() < 0.5 * first


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
