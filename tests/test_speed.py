"""Speed without a change of result: the fast tokenizer against a frozen copy of the previous arithmetic, fused
vs eager attention, bf16 vs fp32, and ``bench perf`` (including on a machine without mlflow/optuna)."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import reference_tokenizer as ref
import torch
from fixtures_backbones import one_thread  # noqa: F401  (autouse fixture)

from peft3d.backbones import BACKBONES
from peft3d.core.spec import RunSpec, TokenizerCfg
from peft3d.methods.build import build_model
from peft3d.models.geometry import farthest_point_sample, gather, knn, knn_from_dist, pairwise_sq_dist
from peft3d.models.tokenizer import PointTokenizer

ROOT = Path(__file__).resolve().parents[1]
TINY_BACKBONES = [n for n in BACKBONES.names() if BACKBONES.meta(n).get("test")]
QUICKSTART = TokenizerCfg(num_stages=3, embed_dim=48, k=16, lga_blocks=(1, 1, 1), last_bottleneck=32)
PAPER_LIKE = TokenizerCfg(k=24)  # paper widths and blocks (2, 1, 1); fewer points to stay fast


def _points(b: int, n: int, seed: int) -> torch.Tensor:
    return torch.rand(b, n, 3, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("cfg,points,width", [(QUICKSTART, 128, 384), (PAPER_LIKE, 256, 768)])
@pytest.mark.parametrize("train", [True, False])
def test_tokenizer_matches_the_previous_implementation(cfg, points, width, train):
    """Same centres bit for bit (same FPS arithmetic); same neighbour sets; tokens, gradients and BatchNorm
    running statistics equal up to float summation order (channels-last matmuls vs 1x1 convolutions)."""
    torch.manual_seed(0)
    fast = PointTokenizer(cfg, width).train(train)
    slow = copy.deepcopy(fast)
    xyz = _points(4, points, seed=1)
    tokens, centres = fast(xyz)
    ref_tokens, ref_centres, _ = ref.tokenizer_forward(slow, xyz)
    assert torch.equal(centres, ref_centres)
    scale = ref_tokens.abs().max()
    assert scale > 1 and (tokens - ref_tokens).abs().max() <= 1e-5 * scale
    if train:
        g = torch.randn(tokens.shape, generator=torch.Generator().manual_seed(2))
        (tokens * g).sum().backward()
        (ref_tokens * g).sum().backward()
        # One absolute scale: a conv bias followed by training-mode BatchNorm has an exactly-zero gradient in
        # exact arithmetic, so both sides hold only rounding noise there. Max-pooling routes each gradient to
        # the arg-max neighbour, and a 1-ulp forward difference can flip a near-tie: measured 1e-6 of the
        # scale at the quickstart settings, up to 3e-3 with the paper's wider stages.
        scale = max(float(q.grad.abs().max()) for q in slow.parameters())
        for (name, p), q in zip(fast.named_parameters(), slow.parameters(), strict=True):
            assert torch.allclose(p.grad, q.grad, rtol=1e-3, atol=1e-2 * scale), name
        for (name, b), c in zip(fast.named_buffers(), slow.buffers(), strict=True):
            assert torch.allclose(b.float(), c.float(), rtol=1e-4, atol=1e-6), name
        assert int(fast.raw[1].num_batches_tracked) == 1


def test_fps_and_knn_reuse_one_distance_matrix():
    xyz = _points(3, 256, seed=3)
    dist = pairwise_sq_dist(xyz)
    c_idx = farthest_point_sample(xyz, 128, dist=dist)
    assert torch.equal(c_idx, ref.fps(xyz, 128))
    fast = knn_from_dist(dist, c_idx, 16)
    slow = knn(gather(xyz, c_idx), xyz, 16)
    # the same neighbour sets; order inside a group may differ on 1-ulp near-ties (sqrt of our sums vs
    # cdist's own): the tokenizer max-pools over the group, so the order never reaches the tokens
    assert torch.equal(fast.sort(-1).values, slow.sort(-1).values)
    assert (fast == slow).float().mean() > 0.99


def _sdpa_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def counting(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    return calls


@pytest.mark.parametrize("backbone", TINY_BACKBONES)
def test_fused_and_eager_attention_agree(backbone, monkeypatch):
    torch.manual_seed(0)
    bb = BACKBONES.get(backbone)(weights="random").eval()
    x = torch.randn(3, 11, bb.spec.width, generator=torch.Generator().manual_seed(4))
    calls = _sdpa_calls(monkeypatch)
    bb.set_attention("eager")
    with torch.no_grad():
        eager = bb(bb.embed_norm(x))
    assert not calls, "eager attention must not call scaled_dot_product_attention"
    bb.set_attention("sdpa")
    with torch.no_grad():
        fused = bb(bb.embed_norm(x))
    assert len(calls) == bb.spec.depth, "every block must run the fused kernel"
    assert torch.allclose(fused, eager, rtol=1e-4, atol=1e-5), (fused - eager).abs().max()
    with pytest.raises(ValueError, match="attention must be one of"):
        bb.set_attention("flash")


@pytest.mark.parametrize("backbone", ["test_bert", "test_dinov2", "test_imagebind_audio"])
def test_bf16_autocast_forward_agrees_with_fp32(backbone):
    """bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2% per op); through the tokenizer, two
    blocks and the head a few dozen roundings compound, so logits agree to a few percent of their scale
    (measured here: about 1%) and never bit for bit."""
    spec = RunSpec(backbone=backbone, method="adapter", weights="random", head_hidden=16, head_dropout=0.0,
                   tokenizer=TokenizerCfg(num_stages=2, embed_dim=16, k=8, lga_blocks=(1, 1), last_bottleneck=8))
    model, _ = build_model(spec, num_classes=5)
    model.eval()
    xyz = _points(6, 64, seed=5)
    with torch.no_grad():
        fp32 = model(xyz)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(xyz).float()
    err = (bf16 - fp32).abs().max() / fp32.abs().max()
    assert 0 < err < 0.05, err


@pytest.mark.parametrize("backbone", ["test_roberta", "test_ssast", "test_dinov2"])
def test_any2point_geometry_is_computed_in_fp32_under_bf16_autocast(backbone):
    """Found on an H200: under bf16 autocast the projection's matmuls ran in bf16, whose 8 significant bits
    rounded table positions past the end (510.6 -> 512 on RoBERTa's 512 rows; pixels on SSAST's 1024-px
    canvas) and the gather asserted. Cell ids, voxel ids and the sampled encoding must be exactly the fp32
    ones whatever the autocast state."""
    from peft3d.methods.any2point.projection import VirtualProjection

    spec = RunSpec(backbone=backbone, method="any2point", preset=f"{backbone}_scan", weights="random",
                   head_hidden=16, head_dropout=0.0,
                   tokenizer=TokenizerCfg(num_stages=2, embed_dim=16, k=8, lga_blocks=(1, 1), last_bottleneck=8))
    model, _ = build_model(spec, num_classes=5)
    proj = next(m for m in model.modules() if isinstance(m, VirtualProjection))
    centres = _points(4, 32, seed=11) * 1.3  # reaching past the unit sphere: projections at the canvas edges
    with torch.no_grad():
        ref_g = proj._compute(centres)
        model.context.cache.clear()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            g = proj.geometry(centres)
    assert g.pe.dtype == torch.float32 and torch.equal(g.pe, ref_g.pe)
    assert torch.equal(g.cell, ref_g.cell) and torch.equal(g.voxel, ref_g.voxel)


def _perf_cli(*args: str) -> subprocess.CompletedProcess:
    """``bench perf`` in a fresh interpreter where mlflow and optuna cannot be imported (as on the GPU
    machine): ``sys.modules[name] = None`` makes both ``import`` and ``importlib.util.find_spec`` see them
    as absent."""
    code = ("import sys\n"
            "for m in ('mlflow', 'optuna', 'optuna_integration'): sys.modules[m] = None\n"
            f"sys.argv = ['bench', 'perf', *{list(args)!r}]\n"
            "from peft3d.cli.app import main\nmain()\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600,
                          cwd=ROOT)


def test_bench_perf_json_without_mlflow_or_optuna():
    r = _perf_cli("-b", "test_bert", "-m", "adapter", "--points", "64", "--batch", "4",
                  "--steps", "1", "--warmup", "1", "--threads", "1", "--profile", "5", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert list(out["methods"]) == ["linear", "adapter"]  # the floor is always measured
    assert out["methods"]["linear"]["ratio"] == 1.0 and out["floor_ms"] == out["methods"]["linear"]["ms"]
    for m in out["methods"].values():
        assert m["ms"] > 0 and m["samples_per_s"] == pytest.approx(4000 / m["ms"], rel=1e-2)
        assert m["peak_mb"] is None or m["peak_mb"] >= 0
        assert m["first_step_s"] > 0  # the one-off costs (with --compile: compilation), timed apart
    # a ratio of two timings: only its sign and finiteness are contract (its size depends on the machine's load)
    assert 0 < out["tokenizer_share"] < float("inf") and out["tokenizer_gflop"] > 0 and out["matmul_gflop_per_s"] > 0
    assert out["settings"]["precision"] == "fp32" and out["settings"]["points"] == 64
    prof = out["profile"]  # the floor step's top operators, largest first, shares of one step's self time
    assert len(prof) == 5 and all(p["self_ms"] > 0 and 0 < p["share"] <= 1 for p in prof)
    assert [p["self_ms"] for p in prof] == sorted((p["self_ms"] for p in prof), reverse=True)
    assert sum(p["share"] for p in prof) <= 1.0 + 1e-6
    extra = out["extra_ops"]["adapter"]  # what the method spends beyond the floor, operator by operator
    assert list(out["extra_ops"]) == ["adapter"] and len(extra) == 5
    assert [p["extra_ms"] for p in extra] == sorted((p["extra_ms"] for p in extra), reverse=True)
    assert all(p["extra_ms"] == pytest.approx(p["self_ms"] - p["floor_ms"], abs=2e-3) for p in extra)
    assert out["settings"]["step"] == "peft3d.training.step.train_step"
    assert out["settings"]["budget"] == {"schedule": "onecycle", "grad_clip": 0.0, "label_smoothing": 0.0}


@pytest.mark.parametrize("args,message", [
    (["-b", "test_bert", "--full-size", "--json"], "test_bert is a tiny test backbone"),
    (["-b", "test_bert", "--precision", "fp16"], "--precision must be fp32 or bf16"),
    (["-b", "test_bert", "--points", "60"], "--points 60 must be divisible"),
    (["-b", "nope"], "unknown backbone"),
    (["-b", "test_bert", "--profile", "-1"], "--profile must be >= 0"),
])
def test_bench_perf_rejects_bad_input_in_one_line(args, message):
    from typer.testing import CliRunner

    from peft3d.cli import perf  # noqa: F401  (registers the command)
    from peft3d.cli.app import app

    res = CliRunner().invoke(app, ["perf", *args])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.output


@pytest.mark.slow  # six tiny models, two fresh interpreters: about 20 s of CPU, minutes on a loaded machine
def test_gpu_perf_script_runs_on_cpu_with_a_tiny_backbone(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, PYTHONPATH=str(ROOT),
               PERF_BACKBONES="test_deit", PERF_DEVICE="cpu", PERF_ARGS="--points 64 --batch 4 --threads 1",
               PERF_STEPS="1", PERF_WARMUP="1", PERF_BACKBONE_S="500", PERF_DEADLINE_S="550")
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_perf.sh")], capture_output=True, text=True,
                       env=env, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = json.loads((tmp_path / "perf_test_deit.json").read_text())
    assert set(out["methods"]) == {"linear", "full", "prompt", "adapter", "lora", "any2point"}
    acc = json.loads((tmp_path / "bf16_vs_fp32.json").read_text())
    assert acc["max_rel_logit_diff"] < 0.05


# -- the fused CPU rows (peft3d.models.fused): exact gradients, in float64 --------------------------------------

def _double(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("relu,residual", [(True, False), (False, True), (True, True)])
def test_batch_norm_rows_gradients_are_exact(relu, residual):
    from peft3d.models.fused import BatchNormRows

    x, w, b = _double(40, 5, seed=0), _double(5, seed=1) + 2, _double(5, seed=2)
    res = _double(40, 5, seed=3) if residual else None
    inputs = [t.requires_grad_() for t in (x, res, w, b) if t is not None]

    def f(*args):
        x_, *rest = args
        res_ = rest.pop(0) if residual else None
        return BatchNormRows.apply(x_, res_, *rest, None, None, None, 0.1, 1e-5, relu)

    assert torch.autograd.gradcheck(f, tuple(inputs))


def test_batch_norm_rows_shift_and_running_stats_as_torch():
    """A convolution bias before a training BatchNorm (``shift``): the same output and running statistics as
    normalising ``x + shift``, and an exactly zero gradient for it."""
    from peft3d.models.fused import BatchNormRows

    x, w, b = _points(64, 6, seed=4).view(-1, 6), torch.ones(6), torch.zeros(6)
    shift = torch.linspace(-2, 3, 6).requires_grad_()
    ours, ref = (torch.zeros(6), torch.ones(6)), (torch.zeros(6), torch.ones(6))
    y = BatchNormRows.apply(x, None, w, b, shift, *ours, 0.1, 1e-5, False)
    y_ref = torch.nn.functional.batch_norm(x + shift.detach(), *ref, w, b, True, 0.1, 1e-5)
    assert torch.allclose(y, y_ref, atol=1e-5) and torch.allclose(ours[0], ref[0], atol=1e-6)
    assert torch.allclose(ours[1], ref[1], rtol=1e-5)
    (y * _points(64, 6, seed=5).view(-1, 6)).sum().backward()
    assert torch.equal(shift.grad, torch.zeros(6))


def test_norm_residual_pool_gradients_are_exact_and_values_match_the_modules():
    from peft3d.models.fused import NormResidualPool

    B, G, K, C = 2, 3, 4, 5
    a, res = _double(B * G * K, C, seed=5), _double(B, G, K, C, seed=6)
    w, b = _double(C, seed=7) + 2, _double(C, seed=8)
    inputs = tuple(t.requires_grad_() for t in (a, res, w, b))

    def pool(a_, res_, w_, b_):
        return NormResidualPool.apply(a_, res_, None, None, None, w_, b_, None, None, None, 0.1, 1e-5)

    assert torch.autograd.gradcheck(pool, inputs)
    with torch.no_grad():
        ref = torch.relu(torch.nn.functional.batch_norm(a, None, None, w, b, True, 0.1, 1e-5).view(B, G, K, C)
                         + res).amax(dim=2)
        assert torch.allclose(pool(a, res, w, b), ref)


def test_norm_residual_pool_routes_the_residual_gradient_to_the_features():
    """One block per stage: the residual is the grouped input, built from ``feat`` outside autograd; the pool's
    backward sends its gradient to ``feat`` directly. gradcheck perturbs ``feat`` through both paths."""
    from peft3d.models.fused import NormResidualPool

    B, N, C, G, K = 2, 5, 3, 3, 4
    g = torch.Generator().manual_seed(14)
    nb = (torch.randint(0, N, (B, G, K), generator=g) + torch.arange(B).view(B, 1, 1) * N).reshape(-1)
    centre = (torch.randint(0, N, (B, G), generator=g) + torch.arange(B).view(B, 1) * N).reshape(-1)
    pe, a = _double(B, G, K, 2 * C, seed=15), _double(B * G * K, 2 * C, seed=16)
    w, b = _double(2 * C, seed=17) + 2, _double(2 * C, seed=18)

    def pool(feat, a_):
        rows = feat.reshape(B * N, C)
        grouped = torch.cat([rows[nb], rows[centre].repeat_interleave(K, 0)], -1).view(B, G, K, 2 * C) + pe
        return NormResidualPool.apply(a_, grouped.detach(), feat, nb, centre, w, b, None, None, None, 0.1, 1e-5)

    assert torch.autograd.gradcheck(pool, (_double(B, N, C, seed=19).requires_grad_(), a.requires_grad_()))


def test_grouped_linear_gradients_are_exact():
    from peft3d.models.fused import GroupedLinear

    B, N, C, G, K, H = 2, 6, 3, 3, 4, 5
    g = torch.Generator().manual_seed(9)
    nb = (torch.randint(0, N, (B, G, K), generator=g) + torch.arange(B).view(B, 1, 1) * N).reshape(-1)
    centre = (torch.randint(0, N, (B, G), generator=g) + torch.arange(B).view(B, 1) * N).reshape(-1)
    feat, w, bias = _double(B, N, C, seed=10), _double(H, 2 * C, seed=11), _double(H, seed=12)
    pe = _double(B, G, K, 2 * C, seed=13)

    def f(feat_, w_, bias_):
        x, a = GroupedLinear.apply(feat_, pe.clone(), nb, centre, w_, bias_, True)
        return x, a  # both outputs carry gradient: x feeds the block's residual

    assert torch.autograd.gradcheck(f, tuple(t.requires_grad_() for t in (feat, w, bias)))
    x, _ = f(feat, w, bias)
    rows = feat.detach().reshape(B * N, C)
    expect = torch.cat([rows[nb], rows[centre].repeat_interleave(K, 0)], -1).view(B, G, K, 2 * C) + pe
    assert torch.allclose(x, expect)


# -- one training step: the function training runs is the function bench perf and bench plan time -------------

def test_training_perf_and_plan_call_the_same_step(monkeypatch):
    """A counting wrapper replaces ``peft3d.training.step.train_step``: a training run, ``bench perf`` and
    ``bench plan`` all go through it (none keeps a copy), once per optimizer step."""
    from peft3d.core.spec import Budget
    from peft3d.training import step
    from peft3d.training.perf import PerfSettings, measure
    from peft3d.training.plan import PlanSettings, plan
    from peft3d.training.train import train_run

    calls: list[int] = []
    real = step.train_step

    def counting(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(step, "train_step", counting)
    spec = RunSpec(backbone="test_bert", method="linear", weights="random", num_points=64, head_hidden=16,
                   tokenizer=TokenizerCfg(num_stages=2, embed_dim=8, k=8, lga_blocks=(1, 1), last_bottleneck=8),
                   budget=Budget(epochs=1, batch_size=96, eval_batch_size=256, lr=1e-3, warmup_epochs=0))
    result = train_run(spec)
    assert len(calls) == result.sections["time"]["steps"] == (480 - 48) // 96
    assert result.sections["environment"]["geometry"] == "torch (vectorised)"  # 64 points: the PyTorch path
    calls.clear()
    measure(PerfSettings(backbone="test_bert", methods=("linear",), points=64, batch=4, steps=2, warmup=1))
    assert len(calls) == 3
    calls.clear()
    plan(PlanSettings(grid="quickstart", tiny=True, steps=2, warmup=1, batch=2))
    assert len(calls) == 4 * 3  # four cells, warm-up + timed steps each


def test_a_compiled_forward_steps_like_the_model():
    """bench perf --compile hands train_step a torch.compile wrapper: it must be called (a wrapper of a model
    without __len__ raised on truth testing) and give the model's loss. The eager backend keeps this test fast:
    it traces the same graph without generating code."""
    from peft3d.core.spec import Budget, RunSpec, TokenizerCfg
    from peft3d.methods.build import build_model
    from peft3d.training.step import Trainer, train_step

    torch.manual_seed(0)
    spec = RunSpec(backbone="test_bert", method="linear", weights="random", num_points=64, head_hidden=16,
                   tokenizer=TokenizerCfg(num_stages=2, embed_dim=8, k=8, lga_blocks=(1, 1), last_bottleneck=8))
    model, _ = build_model(spec, 5)
    model.eval()  # no BatchNorm statistics move: the two forwards see the same model
    x = torch.rand(4, 64, 3, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3])
    budget = Budget(epochs=1, lr=1e-3, warmup_epochs=0)
    compiled = Trainer.for_budget(model, budget, 10, "cpu", "fp32", forward=torch.compile(model, backend="eager"))
    plain = Trainer.for_budget(model, budget, 10, "cpu", "fp32")
    expected = plain.loss(x, y)[0].item()
    loss, logits = train_step(compiled, x, y)
    assert logits.shape == (4, 5) and loss.item() == pytest.approx(expected, rel=1e-5)
