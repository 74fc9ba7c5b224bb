"""Reader for CTranslate2's ``model.bin`` (binary format version 6), written here because the
``ctranslate2`` package only loads such files into its own C++ runtime and exposes no tensors.

Layout (little-endian, no padding), as CTranslate2's ``ModelSpec._serialize`` writes it:

    u32  binary version (6)
    str  spec name (e.g. "WhisperSpec")
    u32  spec revision
    u32  number of variables, then for each variable:
         str  name ("encoder/layer_0/self_attention/linear_0/weight": scopes joined by "/")
         u8   rank, then rank x u32 dimensions
         u8   dtype id: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16
         u32  byte count, then the raw row-major bytes
    u32  number of aliases, then for each: str alias, str variable name

where ``str`` is a u16 length that counts a trailing NUL byte, then that many bytes. Scalars (rank 0) are
configuration values stored as tensors (``encoder/num_heads``). Floating tensors are returned as float32
(fp16 -> fp32 is exact); quantized int8 weights come with separate scales and are refused by the caller.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from peft3d.core.errors import WeightsError

SUPPORTED_VERSIONS = (6,)
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}  # 5 = bfloat16 (unsupported)


@dataclass
class CT2Model:
    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]


class _Reader:
    def __init__(self, f: BinaryIO, path: Path, name: str) -> None:
        self.f, self.path, self.name = f, path, name

    def take(self, n: int) -> bytes:
        b = self.f.read(n)
        if len(b) != n:
            raise WeightsError(f"{self.name}: {self.path} ends early (truncated CTranslate2 model.bin); "
                               "fix: reinstall the package that ships it")
        return b

    def u(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = self.take(self.u("H"))
        return raw[:-1].decode("utf-8")  # drop the counted NUL


def read_ct2(name: str, path: Path, prefix: str = "") -> CT2Model:
    """Parse ``path``; keep only variables whose name starts with ``prefix`` (skipping the others' bytes)."""
    with open(path, "rb") as f:
        r = _Reader(f, path, name)
        version = r.u("I")
        if version not in SUPPORTED_VERSIONS:
            raise WeightsError(f"{name}: {path} is CTranslate2 binary version {version}; this reader knows "
                               f"{SUPPORTED_VERSIONS} (or it is not a CTranslate2 model.bin)")
        spec, revision = r.string(), r.u("I")
        variables = {}
        for _ in range(r.u("I")):
            var = r.string()
            shape = tuple(r.u("I") for _ in range(r.u("B")))
            dtype_id, nbytes = r.u("B"), r.u("I")
            if not var.startswith(prefix):
                f.seek(nbytes, 1)
                continue
            if dtype_id not in DTYPES:
                raise WeightsError(f"{name}: {path}: variable {var} has dtype id {dtype_id}, which this reader "
                                   "does not convert (float32/float16/int8/int16/int32 only)")
            arr = np.frombuffer(r.take(nbytes), dtype=DTYPES[dtype_id])
            if arr.size != int(np.prod(shape)):
                raise WeightsError(f"{name}: {path}: variable {var} holds {arr.size} values for shape {shape}")
            arr = arr.reshape(shape)
            variables[var] = arr.astype(np.float32) if dtype_id == 4 else arr.copy()
        aliases = {}
        for _ in range(r.u("I")):
            alias = r.string()
            aliases[alias] = r.string()
        if f.read(1):
            raise WeightsError(f"{name}: {path} has bytes after its last record (not a CTranslate2 model.bin?)")
    return CT2Model(spec, revision, variables, aliases)
