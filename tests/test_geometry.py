"""Tokenizer geometry against brute force, shapes, and the paper's parameter count."""
import itertools

import numpy as np
import pytest
import torch

from peft3d.core.spec import TokenizerCfg
from peft3d.models.geometry import farthest_point_sample, gather, knn
from peft3d.models.tokenizer import PointTokenizer


def brute_fps(p: np.ndarray, n: int) -> list[int]:
    chosen, d = [0], np.full(len(p), np.inf)
    for _ in range(n - 1):
        d = np.minimum(d, ((p - p[chosen[-1]]) ** 2).sum(1))
        chosen.append(int(d.argmax()))
    return chosen


def test_fps_matches_brute_force_per_sample():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 200, 3, generator=g, dtype=torch.float64)
    idx = farthest_point_sample(x, 17)
    for b in range(3):
        assert idx[b].tolist() == brute_fps(x[b].numpy(), 17)
    assert all(len(set(row.tolist())) == 17 for row in idx)  # no repeats


def test_fps_spreads_points():
    # the corners of a cube plus interior points: 8 FPS picks are the 8 corners
    corners = np.array(list(itertools.product([0.0, 1.0], repeat=3)))
    inner = np.random.default_rng(0).uniform(0.3, 0.7, (50, 3))
    pts = torch.tensor(np.concatenate([inner[:1], corners, inner[1:]]))[None]
    idx = farthest_point_sample(pts, 9)[0].tolist()
    assert set(idx[1:]) == set(range(1, 9))


def test_knn_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    pts = torch.rand(2, 100, 3, generator=g, dtype=torch.float64)
    q = pts[:, :10]
    idx = knn(q, pts, 7)
    for b in range(2):
        for i in range(10):
            d = ((pts[b] - q[b, i]) ** 2).sum(-1)
            assert idx[b, i].tolist() == torch.argsort(d)[:7].tolist()
    assert (idx[:, :, 0] == torch.arange(10)).all()  # a point is its own nearest neighbour


def test_gather_shapes():
    x = torch.arange(2 * 5 * 3).reshape(2, 5, 3).float()
    idx = torch.tensor([[[0, 1], [4, 4]], [[2, 3], [0, 0]]])
    out = gather(x, idx)
    assert out.shape == (2, 2, 2, 3)
    assert torch.equal(out[1, 0, 1], x[1, 3])


def test_tokenizer_shapes_and_paper_param_count():
    cfg = TokenizerCfg()  # paper settings
    tok = PointTokenizer(cfg, 768)
    point_pn = sum(p.numel() for n, p in tok.named_parameters() if not n.startswith("out_norm"))
    assert point_pn == 276_672  # any2point.md §1.1 / §4
    tok.eval()
    tokens, centres = tok(torch.rand(2, 1024, 3))
    assert tokens.shape == (2, 128, 768) and centres.shape == (2, 128, 3)


def test_tokenizer_projection_and_sample_independence_in_eval():
    cfg = TokenizerCfg(num_stages=2, embed_dim=8, k=4, lga_blocks=(1, 1), last_bottleneck=4)
    tok = PointTokenizer(cfg, 24).eval()
    x = torch.rand(3, 64, 3)
    tokens, centres = tok(x)
    assert tokens.shape == (3, 16, 24)
    alone, _ = tok(x[1:2])
    assert torch.allclose(alone[0], tokens[1], atol=1e-5)
    # centres are actual input points chosen by FPS
    assert all((centres[b][:, None] == x[b][None]).all(-1).any(-1).all() for b in range(3))


def test_tokenizer_rejects_bad_point_count():
    tok = PointTokenizer(TokenizerCfg(num_stages=2, embed_dim=8, k=4, lga_blocks=(1, 1)), 32)
    with pytest.raises(ValueError, match="divisible"):
        tok(torch.rand(1, 30, 3))
