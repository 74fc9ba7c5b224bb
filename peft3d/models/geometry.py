"""Farthest point sampling and k-nearest neighbours, vectorised over the batch (the one geometry API of
peft3d: the tokenizer, the evaluation inputs and the training sampler's FPS bank all use it).

Two implementations behind it, chosen per call by :func:`geometry_backend` (recorded in every result's
environment):

* ``torch-fps`` (PyPI, MIT): FPS and fused FPS + kNN as one Triton kernel on CUDA (the whole sampling loop in
  one launch instead of three small kernels per pick) and a C++ kernel on the CPU, compiled at first use by
  ``torch.utils.cpp_extension`` and cached under ``~/.cache/torch_extensions`` (or ``$TORCH_EXTENSIONS_DIR``).
  Used on CUDA for everything, and on the CPU for the tokenizer's stages from :data:`COMPILED_CPU_MIN_POINTS`
  points (measured: half the geometry time at 512-1024 points; at the quickstart's 128 points the saving,
  about 2 ms a step, does not repay a first compile on a fresh machine).
* the vectorised PyTorch loop below: everywhere else, and whenever the compiled kernel is unavailable (not
  installed, no compiler, a device it does not support), which :func:`geometry_backend` says once, in one line.
  The dataset caches' FPS stays here on the CPU: over their thousands of clouds per call the batched loop is
  faster than the per-cloud C++ loop (measured 408 against 558 ms for 64 clouds of 2,048 points).
  ``PEFT3D_GEOMETRY=torch`` forces it everywhere (``=compiled`` insists on the kernel where it exists).

Both compute squared Euclidean distances from coordinate differences, axis by axis in float32 (never the
expanded ``|a|²-2ab+|b|²`` form), so their FPS picks and kNN sets are identical. Ties: FPS takes the lowest
index among equal running distances in both; kNN orders equal distances by index in ``torch-fps`` and
arbitrarily in ``topk``, so the neighbour *sets* can differ only where the k-th and (k+1)-th distances are
exactly equal, and the order inside a group only between equal distances (the tokenizer max-pools over the
group, so the order never reaches the tokens). A cloud with fewer distinct points than picks: the PyTorch loop
may pick a chosen point again (its running distance is 0 like the duplicates'); ``torch-fps`` picks an unchosen
duplicate. The Triton kernel may fuse multiply-adds and then resolve exact near-ties differently from both. One
run uses one backend throughout, so results stay deterministic per seed and resume bit-identically.

When the whole ``(B, N, N)`` matrix fits in :data:`MATRIX_BYTES` the PyTorch path computes it once and FPS
reads rows of it; the tokenizer also reuses it for kNN and for the next stage (whose points are this stage's
centres: a sub-matrix).
"""
from __future__ import annotations

import functools
import os
import sys
import warnings

import torch

MATRIX_BYTES = 512 * 2**20  # above this, FPS computes the distance to each new centre on the fly
COMPILED_CPU_MIN_POINTS = 512  # the tokenizer's stages use the compiled kernel on the CPU from this many points
TORCH = "torch (vectorised)"


def _compiled_kernel(device_type: str) -> tuple[object | None, str | None]:
    """``(torch_fps, None)`` when its compiled kernel runs on ``device_type``, else ``(None, why)``."""
    if os.environ.get("PEFT3D_GEOMETRY", "auto") == "torch":
        return None, "PEFT3D_GEOMETRY=torch"
    return _probe(device_type)


@functools.cache
def _probe(device_type: str) -> tuple[object | None, str | None]:
    try:
        import torch_fps
        from torch_fps import _cpu
    except ImportError as e:
        return None, f"torch-fps is not installed ({e}); fix: pip install torch-fps"
    if device_type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError as e:
            return None, f"Triton is not installed ({e})"
        return torch_fps, None
    if device_type != "cpu":
        return None, f"torch-fps has no compiled kernel for device {device_type}"
    with warnings.catch_warnings(record=True) as caught:  # its own warning becomes our one line
        warnings.simplefilter("always")
        built = _cpu.get_module()
    if built is None:
        why = str(caught[0].message) if caught else "the C++ extension could not be built"
        return None, f"{why.split('; falling back')[0]}; fix: install a C++ compiler (g++)"
    return torch_fps, None


@functools.cache
def _say_fallback(device_type: str, why: str) -> None:
    print(f"peft3d: geometry (FPS, kNN) on the PyTorch path on {device_type}: {why}", file=sys.stderr)


def compiled_for(device: torch.device, points: int, tokenizer: bool) -> object | None:
    """The ``torch_fps`` module when its compiled kernel should run for clouds of ``points`` on ``device``
    (see the module docstring), else None, saying why once per process when it was wanted but is unavailable.
    ``tokenizer``: the tokenizer's per-step FPS + kNN (not the dataset caches' FPS)."""
    kind = torch.device(device).type
    forced = os.environ.get("PEFT3D_GEOMETRY", "auto") == "compiled"
    if not (kind != "cpu" or forced or (tokenizer and points >= COMPILED_CPU_MIN_POINTS)):
        return None
    module, why = _compiled_kernel(kind)
    if module is None and why != "PEFT3D_GEOMETRY=torch":
        _say_fallback(kind, why)
    return module


def geometry_backend(device: str, points: int) -> str:
    """What computes the tokenizer's FPS and kNN for clouds of ``points`` on ``device``, for a result's
    environment. Probes the kernel when it would be used (on the CPU: builds it, once per machine)."""
    if compiled_for(torch.device(device), points, tokenizer=True) is None:
        return TORCH
    from importlib.metadata import version

    return f"torch-fps {version('torch-fps')} ({'C++' if torch.device(device).type == 'cpu' else 'Triton'})"


def _kernel_args(xyz: torch.Tensor, start: torch.Tensor | None) -> dict:
    B, N, _ = xyz.shape
    start = torch.zeros(B, dtype=torch.long, device=xyz.device) if start is None else start.to(xyz.device).long()
    return {"valid_mask": torch.ones(B, N, dtype=torch.bool, device=xyz.device), "start_idx": start,
            "precision": torch.float64 if xyz.dtype == torch.float64 else torch.float32,
            "validate": False, "assume_finite": True}  # no host synchronisation; callers check sizes


def sample_and_group(xyz: torch.Tensor, n: int, k: int, dist: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One tokenizer stage's geometry: ``n`` FPS centres of ``xyz (B, N, 3)`` from point 0 ``(B, n)``, each
    centre's ``k`` nearest points, nearest first ``(B, n, k)``, and the centres' distance matrix for the next
    stage (None on the compiled path, which needs none). ``dist``: this stage's matrix, when the previous stage
    made it."""
    if n > xyz.shape[1] or k > xyz.shape[1]:
        raise ValueError(f"cannot take {n} centres and k={k} neighbours from {xyz.shape[1]} points")
    module = compiled_for(xyz.device, xyz.shape[1], tokenizer=True)
    if module is not None:
        centres, neighbours = module.farthest_point_sampling_with_knn(xyz, k=n, k_neighbors=k,
                                                                      **_kernel_args(xyz, None))
        return centres, neighbours, None
    if dist is None:
        dist = pairwise_sq_dist(xyz)
    centres = farthest_point_sample(xyz, n, dist=dist)
    return centres, knn_from_dist(dist, centres, k), sub_matrix(dist, centres)


def pairwise_sq_dist(xyz: torch.Tensor) -> torch.Tensor:
    """``(B, N, N)`` squared distances of ``xyz (B, N, 3)``; entry ``[b, i, j]`` = sum over axes of
    ``(x_j - x_i)²``, accumulated axis by axis (same rounding as ``((x - x_i) ** 2).sum(-1)``)."""
    planar = xyz.transpose(1, 2).unsqueeze(-1)  # (B, 3, N, 1)
    d = (planar[:, 0].mT - planar[:, 0]).square_()
    for a in range(1, xyz.shape[-1]):
        d += (planar[:, a].mT - planar[:, a]).square_()
    return d


@torch.no_grad()
def farthest_point_sample(xyz: torch.Tensor, n: int, start: torch.Tensor | None = None,
                          dist: torch.Tensor | None = None) -> torch.Tensor:
    """Indices ``(B, n)`` of ``n`` farthest points of ``xyz (B, N, 3)``, starting at ``start (B,)``
    (default: point 0, as pointnet2_ops). ``dist``: the ``(B, N, N)`` matrix of :func:`pairwise_sq_dist`
    when the caller has it.

    On the PyTorch path the loop over the ``n`` picks is inherent to FPS; each pick is 3 batched kernels (read a
    row, running minimum, argmax). The compiled kernel (CUDA) runs the whole loop in one launch.
    """
    B, N, _ = xyz.shape
    if n > N:
        raise ValueError(f"cannot sample {n} points from {N}")
    module = None if dist is not None else compiled_for(xyz.device, N, tokenizer=False)
    if module is not None:
        return module.farthest_point_sampling(xyz, k=n, **_kernel_args(xyz, start))
    if dist is None and B * N * N * xyz.element_size() <= MATRIX_BYTES:
        dist = pairwise_sq_dist(xyz)
    far = torch.zeros(B, dtype=torch.long, device=xyz.device) if start is None else start.to(xyz.device).long()
    batch = torch.arange(B, device=xyz.device)
    best = torch.full((B, N), float("inf"), device=xyz.device, dtype=xyz.dtype)
    picks = []
    if dist is not None:
        rows = dist.reshape(B * N, N)
        offset = batch * N
        for _ in range(n):
            picks.append(far)
            torch.minimum(best, rows.index_select(0, offset + far), out=best)
            far = best.argmax(-1)
    else:  # large inputs (the training sampler's FPS bank): distances to the new centre only, axis by axis
        planar = xyz.transpose(1, 2).contiguous()  # (B, 3, N): contiguous rows per axis
        d, t = torch.empty_like(best), torch.empty_like(best)
        for _ in range(n):
            picks.append(far)
            centre = xyz[batch, far].unsqueeze(-1)  # (B, 3, 1)
            torch.sub(planar[:, 0], centre[:, 0], out=d).square_()
            for a in range(1, planar.shape[1]):
                d.add_(torch.sub(planar[:, a], centre[:, a], out=t).square_())
            torch.minimum(best, d, out=best)
            far = best.argmax(-1)
    return torch.stack(picks, 1)


def knn(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(B, M, k)`` of the ``k`` nearest ``points (B, N, 3)`` to each ``query (B, M, 3)``,
    nearest first (exact Euclidean distance)."""
    if k > points.shape[1]:
        raise ValueError(f"k={k} neighbours requested but only {points.shape[1]} points")
    d = torch.cdist(query, points, compute_mode="donot_use_mm_for_euclid_dist")  # exact, (B, M, N)
    return d.topk(k, dim=-1, largest=False, sorted=True).indices


def knn_from_dist(dist: torch.Tensor, centres: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`knn` of the points ``centres (B, G)`` (indices) among all points, from their
    :func:`pairwise_sq_dist` matrix. The square root keeps the ranking (ties included) identical to
    :func:`knn`'s exact ``cdist``."""
    if k > dist.shape[-1]:
        raise ValueError(f"k={k} neighbours requested but only {dist.shape[-1]} points")
    rows = gather(dist, centres).sqrt_()  # (B, G, N)
    return rows.topk(k, dim=-1, largest=False, sorted=True).indices


def sub_matrix(dist: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``dist[b][idx[b]][:, idx[b]]``: the distance matrix of the picked points ``idx (B, G)``."""
    rows = gather(dist, idx)  # (B, G, N)
    return torch.gather(rows, 2, idx.unsqueeze(1).expand(-1, idx.shape[1], -1))


def gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x (B, N, C)`` indexed by ``idx (B, ...)`` -> ``(B, ..., C)``."""
    B = x.shape[0]
    flat = idx.reshape(B, -1)
    out = torch.gather(x, 1, flat.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return out.reshape(*idx.shape, x.shape[-1])


def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """:func:`gather` as one ``index_select`` of whole rows (one index per row read, and an ``index_add``
    backward): on the CPU 20x faster than ``torch.gather`` with a channel-expanded index for the tokenizer's
    features (measured 0.12 against 2.5 ms for 16,384 rows of 48 floats)."""
    B, N, C = x.shape
    offset = torch.arange(B, device=idx.device).mul_(N).view(B, *([1] * (idx.dim() - 1)))
    return x.reshape(B * N, C).index_select(0, (idx + offset).reshape(-1)).view(*idx.shape, C)
