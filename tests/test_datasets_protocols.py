"""Protocol presets, training sampling (fast FPS, precomputed candidates) and augmentation ranges."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from peft3d.core.errors import ConfigError
from peft3d.datasets.protocols import PROTOCOLS, augment, get_protocol
from peft3d.datasets.sampling import TrainSampler
from peft3d.models.geometry import farthest_point_sample

PTS = np.random.default_rng(0).normal(size=(6, 96, 3)).astype(np.float32)


@pytest.fixture(autouse=True)
def _one_thread(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFT3D_CACHE", str(tmp_path / "c"))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_paper_presets_exist():
    assert {"plain", "any2point_scan", "any2point_mn40"} <= set(PROTOCOLS)
    scan, mn = get_protocol("any2point_scan"), get_protocol("any2point_mn40")
    assert scan.scale == (0.9, 1.1) and scan.rotate_up and not scan.translate
    assert mn.scale == pytest.approx((2 / 3, 3 / 2)) and mn.translate == 0.2 and not mn.rotate_up
    with pytest.raises(ConfigError, match="unknown data protocol"):
        get_protocol("any2point")


def test_fps_matrix_and_streaming_paths_agree_and_honour_start(monkeypatch):
    from peft3d.models import geometry

    x = torch.from_numpy(PTS)
    start = torch.tensor([5, 0, 1, 2, 3, 4])
    with_matrix = farthest_point_sample(x, 40, start)
    monkeypatch.setattr(geometry, "MATRIX_BYTES", 0)  # the training sampler's path for large inputs
    streaming = farthest_point_sample(x, 40, start)
    assert torch.equal(with_matrix, streaming)  # same exact differences: bit-identical picks
    assert all(len(set(r.tolist())) == 40 for r in streaming)  # no point picked twice
    assert streaming[:, 0].tolist() == start.tolist()


def test_train_sampler_batches_are_seeded_and_checked():
    proto = get_protocol("any2point_scan")
    sampler = TrainSampler(PTS, 32, starts=2)
    a = sampler.batch(np.arange(6), proto, np.random.default_rng(3))
    b = sampler.batch(np.arange(6), proto, np.random.default_rng(3))
    assert a.shape == (6, 32, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="exceeds"):
        TrainSampler(PTS, 97)


def test_rotation_about_up_keeps_height_and_radius():
    proto = get_protocol("any2point_scan")
    p = PTS - PTS.mean(1, keepdims=True)
    out = augment(p, proto, np.random.default_rng(0))
    rng = np.random.default_rng(0)
    s = rng.uniform(0.9, 1.1, size=(6, 1, 3))  # the same draws augment makes, in its order
    scaled = p * s
    np.testing.assert_allclose(out[..., 1], scaled[..., 1], atol=1e-5)  # y (up) untouched by the rotation
    np.testing.assert_allclose(np.hypot(out[..., 0], out[..., 2]), np.hypot(scaled[..., 0], scaled[..., 2]),
                               atol=1e-5)


def test_mn40_translation_range():
    proto = get_protocol("any2point_mn40")
    out = augment(np.zeros((200, 4, 3), np.float32), proto, np.random.default_rng(0))
    shift = out[:, 0, :]
    assert np.abs(shift).max() <= 0.2 and np.abs(shift).max() > 0.15


def test_train_sampler_picks_from_fps_candidates(tmp_path):
    proto = get_protocol("none")
    s = TrainSampler(PTS, 16, starts=3, oversample=1.25, cache_key="toy-train")
    assert s.candidates.shape == (6, 3, 20) and s.candidates.dtype == np.int16
    (entry,) = (tmp_path / "c").iterdir()
    assert entry.name.startswith("trainfps-toy-train-20x3-")
    out = s.batch(np.array([4, 1]), proto, np.random.default_rng(0))
    assert out.shape == (2, 16, 3)
    cand = PTS[4][s.candidates[4].reshape(-1).astype(int)]  # every candidate point of sample 4
    # the batch is centred: some translation must map all 16 points onto candidates
    def inside(q):
        return np.isclose(cand[None], q[:, None], atol=1e-5).all(-1).any(1).all()
    assert any(inside(out[0] + (c - out[0][0])) for c in cand)
    assert len(np.unique(out[0], axis=0)) == 16  # no duplicates
    again = TrainSampler(PTS, 16, starts=3, oversample=1.25, cache_key="toy-train")  # from the disk cache
    np.testing.assert_array_equal(again.candidates, s.candidates)
