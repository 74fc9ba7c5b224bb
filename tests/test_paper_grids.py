"""The paper-scale grids (modality_sweep, peft_comparison) validate and expand here; they need the real weights
and data to *run*, so ``bench validate`` is pointed at tiny files in the official formats."""
import pytest

from peft3d.grids.loader import expand, load_grid

PAPER_BACKBONES = {"clip_text", "roberta", "dinov2", "deit", "imagebind_audio", "ssast"}
PAPER_DATASETS = {("scanobjectnn", "pb_t50_rs"), ("modelnet40", "auto")}
POINT_PEFT = {"dapt", "pointgst", "idpt"}  # the point-cloud PEFT baselines, so a GPU sweep includes them


def test_modality_sweep_expands_to_the_paper_design():
    specs = expand("modality_sweep")
    assert len(specs) == 6 * 9 * 2 * 3
    assert {s.backbone for s in specs} == PAPER_BACKBONES
    assert {s.method for s in specs} == {"linear", "full", "prompt", "adapter", "lora", "any2point"} | POINT_PEFT
    assert {(s.dataset, s.variant) for s in specs} == PAPER_DATASETS
    assert {s.seed for s in specs} == {0, 1, 2} and {s.weights for s in specs} == {"pretrained"}
    b = specs[0].budget  # any2point.md §5
    assert (b.epochs, b.warmup_epochs, b.batch_size, b.lr, b.weight_decay, b.grad_clip, b.label_smoothing) == \
        (300, 10, 32, 5e-4, 0.05, 10.0, 0.0)
    assert {s.num_points for s in specs} == {1024}
    assert {(s.dataset, s.protocol) for s in specs} == {("scanobjectnn", "any2point_scan"),
                                                        ("modelnet40", "any2point_mn40")}
    # equal budgets: one tokenizer, head and budget for every method; only the PEFT module differs
    assert len({(s.tokenizer, s.budget, s.head_hidden, s.head_dropout) for s in specs}) == 1
    a2p = [s for s in specs if s.method == "any2point"]
    tag = {"scanobjectnn": "scan", "modelnet40": "mn40"}
    assert all(s.preset == f"{s.backbone}_{tag[s.dataset]}" for s in a2p)


def test_peft_comparison_expands():
    specs = expand("peft_comparison")
    assert {s.backbone for s in specs} == {"clip_text", "dinov2", "imagebind_audio"}
    assert {s.method for s in specs} == {"prompt", "adapter", "lora", "any2point"} | POINT_PEFT
    assert len(specs) == 3 * 7 * 2 * 3
    assert {s.budget for s in specs} == {expand("modality_sweep")[0].budget}  # inherited paper budget
    assert "bench tune" in load_grid("peft_comparison")["description"]


@pytest.fixture
def data_roots(tmp_path, monkeypatch):
    """ScanObjectNN and ModelNet40 in their official formats, exported from the tiny synthetic set."""
    from peft3d.datasets import modelnet40, scanobjectnn
    from peft3d.datasets.synthetic import Synthetic

    monkeypatch.setenv("PEFT3D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(Synthetic, "TRAIN_PER_CLASS", 3)
    monkeypatch.setattr(Synthetic, "TEST_PER_CLASS", 2)
    syn = Synthetic()
    names = list(syn.load_raw("scan", None)[2])
    train, test = syn.splits("scan", 2048)
    scanobjectnn.export(tmp_path / "scan", train, test, names, "synthetic/scan")
    train, test = syn.splits("clean", 2048)
    modelnet40.export(tmp_path / "mn40", train, test, names, "synthetic/clean", "ply_hdf5_2048")
    return tmp_path / "scan", tmp_path / "mn40"


@pytest.mark.parametrize("grid", ["modality_sweep", "peft_comparison"])
def test_bench_validate_paper_grids(grid, data_roots):
    from typer.testing import CliRunner

    from peft3d.cli.app import _mount, app

    _mount()
    scan, mn40 = data_roots
    out = CliRunner().invoke(app, ["validate", "--grid", grid, "--data-root", f"scanobjectnn={scan}",
                                   "--data-root", f"modelnet40={mn40}"])
    assert out.exit_code == 0, out.output
    assert f"grid {grid}: OK" in out.output
    missing = CliRunner().invoke(app, ["validate", "--grid", grid])
    assert missing.exit_code == 2 and "needs its files" in missing.output  # no data: one line naming the fix
