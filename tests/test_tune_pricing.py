"""Pricing the runs a tuned grid has left (``bench tune --progress``): each from the finished runs most like it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from peft3d.core.errors import ConfigError
from peft3d.core.spec import RunSpec
from peft3d.tuning.pricing import Pricer, cost_key, read_perf_ratios

PERF_CPU = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "perf_cpu"


def key(backbone, method, labels=None):
    return backbone, method, "sweethome3d", labels


def test_the_cost_key_ignores_weights_and_seed_and_keeps_the_labels_per_class():
    a = RunSpec(backbone="test_bert", method="lora", dataset="sweethome3d", variant="f3_n10", seed=4,
                weights="random")
    b = a.replace(seed=0, weights="pretrained", variant="f1_n10")
    assert cost_key(a) == cost_key(b) == ("test_bert", "lora", "sweethome3d", 10)
    assert cost_key(a.to_dict()) == cost_key(a)  # a result's spec section prices the same
    assert cost_key(a.replace(variant="f0"))[3] is None  # all labels


def test_each_rule_in_turn():
    assert Pricer.of([]).price(key("a", "linear")) == (None, "overall")  # nothing finished anywhere
    runs = [(key("a", "linear"), s) for s in (100.0, 110.0, 120.0)] + [(key("a", "any2point"), 330.0)]
    runs += [(key("b", "linear"), s) for s in (200.0, 220.0)] + [(key("b", "any2point"), 420.0)]
    runs += [(key("c", "linear"), 50.0), (key("c", "linear", 5), 10.0)]
    p = Pricer.of(runs, {("c", "dapt"): 1.5})
    assert p.price(key("a", "any2point")) == (330.0, "own")
    assert p.price(key("a", "linear")) == (110.0, "own")  # the median of its three runs
    # ratios 3.0 on a and 2.0 on b, median 2.5, times c's linear median
    assert p.price(key("c", "any2point")) == pytest.approx((125.0, "ratio"))
    assert p.price(key("c", "dapt")) == pytest.approx((75.0, "perf"))  # no dapt anywhere: bench perf's ratio
    assert p.price(key("c", "idpt")) == (50.0, "floor")  # neither: the linear probe's cost, a floor
    assert p.price(key("d", "linear")) == (120.0, "overall")  # no run on d: the median of all nine
    # few labels are priced from few-label runs only: c's 5-per-class linear median, and no a/b ratio at 5 per class
    assert p.price(key("c", "dapt", 5)) == pytest.approx((15.0, "perf"))
    assert p.price(key("c", "any2point", 5)) == (10.0, "floor")


def test_the_committed_perf_records_give_every_method_a_ratio_per_backbone():
    ratios = read_perf_ratios(PERF_CPU)
    backbones = {b for b, _ in ratios}
    assert backbones == {"minilm", "dinov2_small", "whisper_tiny"}
    for b in backbones:
        assert ratios[b, "linear"] == 1.0
        assert all(ratios[b, m] > 1.0 for m in ("full", "any2point", "lora", "dapt", "pointgst", "idpt"))
    one = read_perf_ratios(PERF_CPU / "minilm-full-size-1thread.json")
    assert {b for b, _ in one} == {"minilm"} and one == {k: v for k, v in ratios.items() if k[0] == "minilm"}


def test_a_file_that_is_not_a_perf_record_names_itself_and_the_fix(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"methods": {"linear": {"ratio": 1.0}}}))  # no settings
    with pytest.raises(ConfigError, match=r"--perf .*x\.json: not a `bench perf --json` record .*fix: pass"):
        read_perf_ratios(bad)
    bad.write_text(json.dumps({"settings": {"backbone": "minilm"}, "methods": {"full": {"ratio": 0}}}))
    with pytest.raises(ConfigError, match="positive ratios"):
        read_perf_ratios(bad)
    with pytest.raises(ConfigError, match="no bench perf record there"):
        read_perf_ratios(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no bench perf record there"):
        read_perf_ratios(tmp_path / "empty")
