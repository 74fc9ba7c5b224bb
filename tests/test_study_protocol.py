"""The transfer study's protocol pieces: k-fold and few-label variants, early stopping on a validation plateau,
the constant schedule, and the convergence flag of early-stopped runs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from peft3d.core.spec import Budget, RunSpec, TokenizerCfg
from peft3d.datasets.base import few_label_parts, per_class_subset
from peft3d.datasets.sweethome3d import stratified_folds
from peft3d.reporting.tables import late_selection
from peft3d.training.schedules import lr_lambda, plateaued


def _labels(seed: int = 0) -> np.ndarray:
    sizes = [8, 9, 11, 33, 65, 10]  # the smallest and largest classes of the real table, and some between
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(len(sizes)), sizes))


def test_folds_test_every_sample_once_stratified_and_balanced():
    y = _labels()
    fold = stratified_folds(y, 5, seed=3)
    assert sorted(set(fold.tolist())) == [0, 1, 2, 3, 4]  # every sample in exactly one test fold
    sizes = np.bincount(fold)
    assert sizes.max() - sizes.min() <= 1
    for c in np.unique(y):
        per_fold = np.bincount(fold[y == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1, c  # each class spread as evenly as its size allows
    assert np.array_equal(fold, stratified_folds(y, 5, seed=3))
    assert not np.array_equal(fold, stratified_folds(y, 5, seed=4))


def test_few_label_subset_is_capped_per_class_nested_and_seeded():
    y = _labels(1)
    idx = np.arange(0, len(y), 2)
    five, ten = per_class_subset(y, idx, 5, 0), per_class_subset(y, idx, 10, 0)
    assert set(five) <= set(ten) <= set(idx)
    for c in np.unique(y[idx]):
        have = int((y[idx] == c).sum())
        assert (y[five] == c).sum() == min(5, have) and (y[ten] == c).sum() == min(10, have)
    assert np.array_equal(five, per_class_subset(y, idx, 5, 0))
    assert few_label_parts("f3_n20") == ("f3", 20) and few_label_parts("s0") == ("s0", None)
    assert few_label_parts("pb_t50_rs") == ("pb_t50_rs", None)


def test_few_label_variant_keeps_the_validation_and_test_of_its_fold():
    from peft3d.datasets.synthetic import Synthetic

    class FewLabel(Synthetic):  # the synthetic set under a variant list that includes a few-label variant
        pass

    FewLabel.variants = ("scan", "scan_n3")  # after __init_subclass__, which reads the registry's list
    full, few = FewLabel().load("scan", None), FewLabel().load("scan_n3", None)
    assert np.array_equal(full.val.points, few.val.points) and np.array_equal(full.test.labels, few.test.labels)
    assert np.bincount(few.train.labels).max() == 3 and len(few.train) == 3 * full.num_classes
    assert few.identity["train_per_class"] == 3 and "train_indices_sha256" in few.identity


def test_plateau_rule():
    assert not plateaued([0.5, 0.6, 0.6], 0)  # off
    assert not plateaued([0.5, 0.6, 0.6], 2)  # the best (earliest 0.6, epoch 2) is 1 epoch old
    assert plateaued([0.5, 0.6, 0.6, 0.55], 2)
    assert not plateaued([0.5, 0.6, 0.6, 0.7], 2)
    assert plateaued([0.4], 0) is False and plateaued([], 3) is False


def test_constant_schedule_holds_the_lr_after_warm_up():
    f = lr_lambda(total=100, warmup=10, lr=1e-3, min_lr=1e-6, decay=False)
    assert f(0) == pytest.approx(0.1) and f(9) == 1.0 and f(10) == 1.0 and f(99) == 1.0
    cosine = lr_lambda(total=100, warmup=10, lr=1e-3, min_lr=1e-6)
    assert cosine(99) < 0.01


def test_patience_and_schedule_enter_the_run_id_only_when_set():
    a = RunSpec(backbone="minilm", method="linear")
    assert a.replace(budget=Budget(patience=0)).run_id == a.run_id
    assert len({a.run_id, a.replace(budget=Budget(patience=5)).run_id,
                a.replace(budget=Budget(schedule="constant")).run_id}) == 3
    with pytest.raises(ValueError, match="patience"):
        Budget(patience=-1)


def test_a_run_on_a_plateau_stops_early_and_says_so():
    from peft3d.training.train import train_run

    torch.set_num_threads(1)
    tok = TokenizerCfg(num_stages=2, embed_dim=12, k=8, lga_blocks=(1, 1), last_bottleneck=8)
    # lr 1e-9: the weights barely move, so validation accuracy repeats and the first epoch stays the best
    spec = RunSpec(backbone="test_bert", method="linear", weights="random", num_points=64, tokenizer=tok,
                   head_hidden=32, budget=Budget(epochs=10, batch_size=32, eval_batch_size=128, lr=1e-9,
                                                 warmup_epochs=0, schedule="constant", patience=2))
    r = train_run(spec)
    stop = r.section("stopping")
    assert r.ok and stop == {"cap": 10, "patience": 2, "epochs_run": 3, "stopped_early": True}
    assert len(r.metrics.curves["epoch"]) == 3 and r.metrics.selected_epoch == 1
    assert len(set(r.metrics.curves["lr"])) == 1  # constant, no warm-up


def test_late_selection_flags_runs_at_their_cap_only():
    assert late_selection(10, 10) is True  # ran to its cap, best at the end: possibly under-trained
    assert late_selection(38, 40, stopped_early=True) is False  # a plateau ended it
    assert late_selection(5, 10) is False and late_selection(None, 10) is None
