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


# -- the compiled backend (torch-fps) behind the geometry API --------------------------------------------------
# The default suite never compiles anything: torch-fps's pure-PyTorch reference has the semantics of its Triton
# kernel (its documented oracle), so parity is checked against it; the C++ kernel's parity is a slow test.

import torch_fps  # noqa: E402
from torch_fps import _cpu  # noqa: E402

from peft3d.models import geometry  # noqa: E402


@pytest.fixture
def fresh_probe(monkeypatch):
    probe, say = geometry._probe, geometry._say_fallback  # the cached originals (a test may replace them)
    probe.cache_clear()
    say.cache_clear()
    monkeypatch.delenv("PEFT3D_GEOMETRY", raising=False)
    yield
    probe.cache_clear()
    say.cache_clear()


def _reference_kernel(monkeypatch):
    """torch-fps with its C++ build switched off: its reference backend, Triton's semantics, no compile."""
    monkeypatch.setattr(_cpu, "get_module", lambda: None)


def _cloud(b: int, n: int, seed: int) -> torch.Tensor:
    return torch.rand(b, n, 3, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("n,k", [(128, 16), (96, 32)])
def test_compiled_semantics_match_the_torch_path_without_ties(monkeypatch, n, k):
    _reference_kernel(monkeypatch)
    xyz = _cloud(4, n, seed=n)
    monkeypatch.setenv("PEFT3D_GEOMETRY", "torch")
    c, nb, _ = geometry.sample_and_group(xyz, n // 2, k)
    c2, nb2 = torch_fps.farthest_point_sampling_with_knn(xyz, k=n // 2, k_neighbors=k,
                                                         **geometry._kernel_args(xyz, None))
    assert torch.equal(c, c2)
    assert torch.equal(nb, nb2)  # random floats: no equal distances, so the same order too
    start = torch.tensor([3, 0, 7, 1])
    assert torch.equal(farthest_point_sample(xyz, 20, start),
                       torch_fps.farthest_point_sampling(xyz, k=20, **geometry._kernel_args(xyz, start)))


def test_fps_ties_go_to_the_lowest_index_in_both_backends(monkeypatch):
    """A lattice: many equal distances. Both take the lowest index among equal running distances."""
    _reference_kernel(monkeypatch)
    axis = torch.arange(4, dtype=torch.float32)
    lattice = torch.cartesian_prod(axis, axis, axis)[None]  # 64 points, distances tie everywhere
    ours = farthest_point_sample(lattice, 16)
    theirs = torch_fps.farthest_point_sampling(lattice, k=16, **geometry._kernel_args(lattice, None))
    assert torch.equal(ours, theirs)
    _, nb = torch_fps.farthest_point_sampling_with_knn(lattice, k=4, k_neighbors=7,
                                                       **geometry._kernel_args(lattice, None))
    # kNN's documented rule on equal distances: ascending index (the 6 lattice neighbours of a corner-free
    # centre are at distance 1; a corner has 3)
    d = ((lattice[0, nb[0]] - lattice[0, nb[0, :, :1]]) ** 2).sum(-1)
    for row_d, row_i in zip(d, nb[0], strict=True):
        for j in range(6):
            assert row_d[j] < row_d[j + 1] or (row_d[j] == row_d[j + 1] and row_i[j] < row_i[j + 1])


def test_backend_selection_by_device_and_size(monkeypatch, fresh_probe):
    fake = object()
    monkeypatch.setattr(geometry, "_probe", lambda kind: (fake, None))
    cpu = torch.device("cpu")
    assert geometry.compiled_for(cpu, 128, tokenizer=True) is None  # the quickstart's size: no compile
    assert geometry.compiled_for(cpu, geometry.COMPILED_CPU_MIN_POINTS, tokenizer=True) is fake
    assert geometry.compiled_for(cpu, 4096, tokenizer=False) is None  # the dataset caches' batched FPS
    assert geometry.compiled_for(torch.device("cuda"), 128, tokenizer=False) is fake
    monkeypatch.setenv("PEFT3D_GEOMETRY", "compiled")
    assert geometry.compiled_for(cpu, 64, tokenizer=False) is fake
    monkeypatch.setenv("PEFT3D_GEOMETRY", "torch")
    assert geometry.geometry_backend("cpu", 1024) == geometry.TORCH


def test_no_compiler_falls_back_with_one_line(monkeypatch, capsys, fresh_probe):
    def failing_build():
        import warnings

        warnings.warn("torch_fps: the C++ CPU extension could not be built (g++ not found); falling back to "
                      "the slower pure-PyTorch backend.", RuntimeWarning, stacklevel=2)
        return None

    monkeypatch.setattr(_cpu, "get_module", failing_build)
    xyz = _cloud(2, 512, seed=5)
    c, nb, dist = geometry.sample_and_group(xyz, 256, 8)
    assert dist is not None  # the PyTorch path (it keeps a distance matrix for the next stage)
    geometry.sample_and_group(xyz, 256, 8)
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "g++ not found" in err[0] and "fix: install a C++ compiler" in err[0], err
    assert geometry.geometry_backend("cpu", 512) == geometry.TORCH
    monkeypatch.setattr(geometry, "_probe", lambda kind: (None, f"torch-fps has no compiled kernel for {kind}"))
    geometry._say_fallback.cache_clear()
    assert geometry.compiled_for(torch.device("meta"), 64, tokenizer=True) is None
    assert "no compiled kernel for meta" in capsys.readouterr().err


@pytest.mark.slow  # builds torch-fps's C++ extension on first use (15 s to 2 min, then cached)
def test_compiled_cpu_kernel_matches_the_torch_path(fresh_probe, monkeypatch):
    module, why = geometry._probe("cpu")
    if module is None:
        pytest.skip(f"no compiled CPU kernel here: {why}")
    xyz = _cloud(3, 1024, seed=6)
    c, nb, dist = geometry.sample_and_group(xyz, 512, 32)
    assert dist is None  # the compiled path
    monkeypatch.setenv("PEFT3D_GEOMETRY", "torch")
    c2, nb2, _ = geometry.sample_and_group(xyz, 512, 32)
    assert torch.equal(c, c2) and torch.equal(nb, nb2)
    assert geometry.geometry_backend("cpu", 1024) == geometry.TORCH
    monkeypatch.delenv("PEFT3D_GEOMETRY")
    assert geometry.geometry_backend("cpu", 1024).endswith("(C++)")
    assert geometry.geometry_backend("cpu", 128) == geometry.TORCH
