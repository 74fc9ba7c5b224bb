"""ModelNet40 (Wu et al., CVPR 2015) in each of its common distributions.

* ``fps_cache`` — Point-BERT's ``modelnet40_{train,test}_8192pts_fps.dat`` (a pickle of ``[points, labels]``:
  per shape an (8192, 6) float32 array and a (1,) int32 label). Read with a restricted unpickler that admits
  numpy arrays and plain containers only: a pickle is code, and this one is a file a user downloaded.
* ``ply_hdf5_2048`` — PointNet's ``ply_data_{train,test}N.h5`` (``data`` (n, 2048, 3) float32, ``label`` (n, 1)
  uint8), listed by ``{train,test}_files.txt``; 9,840 / 2,468 shapes (three fewer training shapes than the others).
* ``normal_resampled`` — per-shape ``CLASS/CLASS_NNNN.txt`` with 10,000 lines ``x,y,z,nx,ny,nz``, the split lists
  ``modelnet40_{train,test}.txt`` and ``modelnet40_shape_names.txt``; 9,843 / 2,468 shapes.

``auto`` picks what is present under the root, preferring the Point-BERT cache (the exact points Any2Point uses),
then the HDF5 files, then the text files.

Stored points: 8192 (cache), 2048 (HDF5), 8192 (text: the first 8192 of the 10,000 points, which are i.i.d.
uniform surface samples, so a prefix is an unbiased subsample — PointNet++'s own non-FPS path does the same;
Point-BERT's FPS to 8192 would take hours on a CPU for 12k shapes). The parsed text files are cached once as
one ``.npy`` per split in the peft3d cache, keyed by the split lists and every listed file's size and mtime.
Every shape is centred and scaled into the unit sphere, as Point-BERT/Any2Point do at load time. Normals are
dropped (Any2Point uses xyz only).
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from peft3d.core.digest import array_sha256, file_sha256, parts_sha256
from peft3d.core.errors import DataError
from peft3d.datasets.base import DatasetFamily, Split
from peft3d.datasets.cache import cached
from peft3d.datasets.io import (
    MANIFEST,
    as_labels,
    as_points,
    check_values,
    h5_shapes,
    read_h5,
    read_manifest,
    safe_unpickle,
    unit_sphere,
)

CLASSES = ["airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone", "cup",
           "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp", "laptop",
           "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink", "sofa",
           "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox"]
FORMATS = ("fps_cache", "ply_hdf5_2048", "normal_resampled")  # auto-detection order
DIRS = {"fps_cache": "modelnet40_normal_resampled", "ply_hdf5_2048": "modelnet40_ply_hdf5_2048",
        "normal_resampled": "modelnet40_normal_resampled"}
POINTS = {"fps_cache": 8192, "ply_hdf5_2048": 2048, "normal_resampled": 8192}
TXT_POINTS = 8192
SPLITS = ("train", "test")
DAT = "modelnet40_{split}_8192pts_fps.dat"
SHAPE_NAMES = "modelnet40_shape_names.txt"
TXT_LIST = "modelnet40_{split}.txt"
H5_LIST = "{split}_files.txt"
FIX = {
    "fps_cache": "download the processed ModelNet40 from Point-BERT's DATASET.md (github.com/Julie-tang00/Point-BERT; "
                 "Google Drive / Tsinghua Cloud) and put modelnet40_{{train,test}}_8192pts_fps.dat in {dir}",
    "ply_hdf5_2048": "download modelnet40_ply_hdf5_2048.zip (PointNet, github.com/charlesq34/pointnet) and unzip it "
                     "so that {dir}/ply_data_train0.h5 exists",
    "normal_resampled": "download modelnet40_normal_resampled.zip (PointNet++, github.com/charlesq34/pointnet2) and "
                        "unzip it so that {dir}/modelnet40_train.txt and {dir}/airplane/airplane_0001.txt exist",
}


def fix(fmt: str, d: Path) -> str:
    return FIX[fmt].format(dir=d) + " (see: bench data info modelnet40)"


def _root(root: str | None) -> Path:
    if not root:
        raise DataError("modelnet40 needs its files: pass --root PATH or set data_root in the grid; "
                        "see: bench data info modelnet40")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"ModelNet40: root {path} is not a folder; {fix('fps_cache', path)}")
    return path


def _present(fmt: str, d: Path) -> bool:
    if fmt == "fps_cache":
        return any((d / DAT.format(split=s)).is_file() for s in SPLITS)
    if fmt == "ply_hdf5_2048":
        return any(d.glob("ply_data_*.h5")) or (d / H5_LIST.format(split="train")).is_file()
    return any((d / n).is_file() for n in (SHAPE_NAMES, TXT_LIST.format(split="train"), TXT_LIST.format(split="test")))


def locate(variant: str, root: str | None) -> tuple[str, Path]:
    """(format, folder). ROOT may be the format's folder itself or its parent."""
    base = _root(root)
    fmts = FORMATS if variant == "auto" else (variant,)
    for fmt in fmts:
        for d in (base, base / DIRS[fmt], base / "ModelNet" / DIRS[fmt]):
            if d.is_dir() and _present(fmt, d):
                return fmt, d
    if variant == "auto":
        raise DataError(f"ModelNet40: nothing found under {base} (looked for {DAT.format(split='train')}, "
                        f"ply_data_train0.h5, {TXT_LIST.format(split='train')}, also in modelnet40_normal_resampled/ "
                        f"and modelnet40_ply_hdf5_2048/); {fix('fps_cache', base / DIRS['fps_cache'])}")
    d = base / DIRS[variant]
    raise DataError(f"ModelNet40 ({variant}): no files found under {base} or {d}; {fix(variant, d)}")


def class_names(d: Path, manifest: dict[str, Any] | None, required: bool) -> list[str]:
    if manifest:
        return list(manifest["class_names"])
    for name in (SHAPE_NAMES, "shape_names.txt"):
        path = d / name
        if path.is_file():
            names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
            if len(names) != len(CLASSES):
                raise DataError(f"{path}: lists {len(names)} classes, ModelNet40 has 40; re-download it")
            return names
    if required:
        raise DataError(f"{d / SHAPE_NAMES} not found; it maps folders to labels — {fix('normal_resampled', d)}")
    return list(CLASSES)


# ---- fps_cache -----------------------------------------------------------------------------------------------

def read_dat(path: Path, num_classes: int) -> Split:
    f = fix("fps_cache", path.parent)
    if not path.is_file():
        raise DataError(f"{path} not found; {f}")
    obj = safe_unpickle(path, f)
    if not (isinstance(obj, (list, tuple)) and len(obj) == 2 and len(obj[0]) == len(obj[1])):
        raise DataError(f"{path}: expected a pickled [points, labels] pair of equal-length lists; not Point-BERT's "
                        f"cache — {f}")
    pts, labs = obj
    shapes = {np.shape(p) for p in pts}
    if len(shapes) > 1:
        raise DataError(f"{path}: shapes differ in point count {sorted(shapes)[:3]}...; not Point-BERT's cache — {f}")
    shape = shapes.pop() if shapes else (1, 3)
    if len(shape) != 2 or shape[1] < 3 or not all(isinstance(p, np.ndarray) and p.dtype.kind == "f" for p in pts):
        raise DataError(f"{path}: each shape must be a float (P, 3+) array, got {shape}; not Point-BERT's cache — {f}")
    points = np.empty((len(pts), shape[0], 3), np.float32)  # xyz only, filled in place: no 2 GB intermediate
    for i, p in enumerate(pts):
        points[i] = p[:, :3]
    labels = as_labels(np.asarray([np.asarray(x).reshape(-1)[0] for x in labs]), len(points), str(path), f)
    del obj, pts
    check_values(points, labels, num_classes, str(path), f"the file is corrupt; {f}")
    return Split(unit_sphere(points), labels)


def write_dat(path: Path, split: Split, normals: bool = True) -> None:
    """Write ``split`` as Point-BERT does (per shape (P, 6) float32 with zero normals, (1,) int32 label)."""
    pts = [np.concatenate([p, np.zeros_like(p)], 1) if normals else p for p in split.points.astype(np.float32)]
    labs = [np.array([y], dtype=np.int32) for y in split.labels]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump([pts, labs], fh)


# ---- ply_hdf5_2048 -------------------------------------------------------------------------------------------

def _index(p: Path) -> int:
    m = re.search(r"(\d+)\.h5$", p.name)
    return int(m.group(1)) if m else -1


def h5_files(d: Path, split: str) -> list[Path]:
    lst = d / H5_LIST.format(split=split)
    if lst.is_file():  # entries look like data/modelnet40_ply_hdf5_2048/ply_data_train0.h5: keep the file name
        files = [d / Path(ln.strip()).name for ln in lst.read_text().splitlines() if ln.strip()]
    else:
        files = sorted(d.glob(f"ply_data_{split}*.h5"), key=_index)
    if not files:
        raise DataError(f"ModelNet40: no ply_data_{split}*.h5 in {d}; {fix('ply_hdf5_2048', d)}")
    return files


def read_h5_split(d: Path, split: str, num_classes: int) -> Split:
    f = fix("ply_hdf5_2048", d)
    pts, labs = [], []
    for path in h5_files(d, split):
        a = read_h5(path, ("data", "label"), f"re-download it: {f}")
        p = as_points(a["data"], str(path), f)
        y = as_labels(a["label"], len(p), str(path), f)
        check_values(p, y, num_classes, str(path), f"the file is corrupt; re-download it: {f}")
        pts.append(p)
        labs.append(y)
    points = np.concatenate(pts) if len(pts) > 1 else pts[0]
    return Split(unit_sphere(points), np.concatenate(labs))


def write_h5(d: Path, split: str, data: Split, shards: int = 1) -> None:
    """PointNet's layout: ``ply_data_{split}{i}.h5`` (float32 data, (n, 1) uint8 label) + ``{split}_files.txt``."""
    import h5py

    d.mkdir(parents=True, exist_ok=True)
    names = []
    for i, idx in enumerate(np.array_split(np.arange(len(data)), shards)):
        name = f"ply_data_{split}{i}.h5"
        with h5py.File(d / name, "w") as fh:
            fh.create_dataset("data", data=data.points[idx].astype(np.float32))
            fh.create_dataset("label", data=data.labels[idx].astype(np.uint8)[:, None])
        names.append(f"data/modelnet40_ply_hdf5_2048/{name}")
    (d / H5_LIST.format(split=split)).write_text("\n".join(names) + "\n")


# ---- normal_resampled ----------------------------------------------------------------------------------------

def txt_list(d: Path, split: str) -> list[str]:
    path = d / TXT_LIST.format(split=split)
    if not path.is_file():
        raise DataError(f"{path} not found; it lists the {split} shapes (the split is defined by it) — "
                        f"{fix('normal_resampled', d)}")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def _shape_file(d: Path, shape_id: str) -> tuple[str, Path]:
    cls = shape_id.rsplit("_", 1)[0]  # "night_stand_0001" -> "night_stand"
    return cls, d / cls / f"{shape_id}.txt"


def _parse_txt(path: Path, f: str) -> np.ndarray:
    try:
        a = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2, max_rows=TXT_POINTS)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable ({' '.join(str(e).split())[:120]}); {f}") from None
    if a.shape[0] < TXT_POINTS or a.shape[1] < 3:
        raise DataError(f"{path}: {a.shape[0]} rows × {a.shape[1]} columns, expected ≥ {TXT_POINTS} rows of "
                        f"x,y,z,nx,ny,nz; the file is truncated — {f}")
    return a[:, :3]


def txt_index(d: Path, split: str, names: list[str]) -> tuple[list[str], np.ndarray, list[Path]]:
    """(shape ids, labels, files) of one split; every listed file must exist."""
    f = fix("normal_resampled", d)
    ids = txt_list(d, split)
    index = {n: i for i, n in enumerate(names)}
    labels, files = np.zeros(len(ids), np.int64), []
    for i, sid in enumerate(ids):
        cls, path = _shape_file(d, sid)
        if cls not in index:
            raise DataError(f"{d / TXT_LIST.format(split=split)}: shape {sid!r} has class {cls!r}, not in "
                            f"{SHAPE_NAMES}; {f}")
        if not path.is_file():
            raise DataError(f"{path} not found (listed in {TXT_LIST.format(split=split)}); {f}")
        labels[i] = index[cls]
        files.append(path)
    return ids, labels, files


def read_txt_split(d: Path, split: str, names: list[str], cache_dir: str | None = None,
                   index: tuple[list[str], np.ndarray, list[Path]] | None = None) -> tuple[Split, str]:
    f = fix("normal_resampled", d)
    ids, labels, files = index or txt_index(d, split, names)
    stats = [(p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    name = f"modelnet40-txt-{split}-{parts_sha256('v1', d.resolve(), ids, names, stats, TXT_POINTS)[:24]}.npy"

    def parse() -> np.ndarray:
        out = np.empty((len(files), TXT_POINTS, 3), np.float32)
        for i, p in enumerate(files):
            out[i] = _parse_txt(p, f)
        return unit_sphere(out)

    points = cached(name, parse, cache_dir, check=lambda a: a.shape == (len(ids), TXT_POINTS, 3))
    check_values(points, labels, len(names), str(d / TXT_LIST.format(split=split)), f"the files are corrupt; {f}")
    return Split(points, labels), name


def write_txt(d: Path, train: Split, test: Split, names: list[str]) -> None:
    """PointNet++'s layout, with zero normals (a few points; readers only need ≥ TXT_POINTS rows per file)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / SHAPE_NAMES).write_text("\n".join(names) + "\n")
    counters: dict[str, int] = {}
    for split, data in (("train", train), ("test", test)):
        ids = []
        for p, y in zip(data.points, data.labels, strict=True):
            cls = names[int(y)]
            counters[cls] = counters.get(cls, 0) + 1
            sid = f"{cls}_{counters[cls]:04d}"
            (d / cls).mkdir(exist_ok=True)
            np.savetxt(d / cls / f"{sid}.txt", np.concatenate([p, np.zeros_like(p)], 1), fmt="%.6f", delimiter=",")
            ids.append(sid)
        (d / TXT_LIST.format(split=split)).write_text("\n".join(ids) + "\n")


# ---- the family ----------------------------------------------------------------------------------------------

class ModelNet40(DatasetFamily):
    """ModelNet40 — 40 CAD categories, 9,843 train / 2,468 test (9,840 train in the HDF5 release).

Any one of these distributions works; `auto` (the default) uses the first present in this order:

  ROOT/ (or ROOT/modelnet40_normal_resampled/)
    modelnet40_train_8192pts_fps.dat     fps_cache: Point-BERT's processed ModelNet (what Any2Point trains on)
    modelnet40_test_8192pts_fps.dat        github.com/Julie-tang00/Point-BERT DATASET.md (Google Drive / Tsinghua)
  ROOT/ (or ROOT/modelnet40_ply_hdf5_2048/)
    ply_data_train0.h5 ... ply_data_train4.h5, ply_data_test0.h5, ply_data_test1.h5, train_files.txt,
    test_files.txt, shape_names.txt      ply_hdf5_2048: PointNet's release (modelnet40_ply_hdf5_2048.zip,
                                           github.com/charlesq34/pointnet)
  ROOT/ (or ROOT/modelnet40_normal_resampled/)
    modelnet40_shape_names.txt, modelnet40_train.txt, modelnet40_test.txt,
    airplane/airplane_0001.txt ...       normal_resampled: PointNet++'s release (modelnet40_normal_resampled.zip,
                                           github.com/charlesq34/pointnet2); 10,000 "x,y,z,nx,ny,nz" lines each;
                                           parsed once (first 8192 points) and cached as .npy

Points are centred and scaled into the unit sphere per shape; normals are ignored."""

    name = "modelnet40"

    def __init__(self, cache_dir: str | None = None) -> None:
        self.cache_dir = cache_dir

    def load_raw(self, variant: str, root: str | None) -> tuple[Split, Split, list[str], dict[str, Any]]:
        fmt, d = locate(variant, root)
        manifest = read_manifest(d) or read_manifest(_root(root))
        names = class_names(d, manifest, required=fmt == "normal_resampled")
        source: dict[str, Any] = {"source": f"modelnet40/{fmt}", "format": fmt, "root": str(d)}
        if fmt == "fps_cache":
            files = {s: d / DAT.format(split=s) for s in SPLITS}
            splits = {s: read_dat(p, len(names)) for s, p in files.items()}
            source["sha256"] = {s: file_sha256(p)[:16] for s, p in files.items()}
        elif fmt == "ply_hdf5_2048":
            splits = {s: read_h5_split(d, s, len(names)) for s in SPLITS}
            source["sha256"] = {s: parts_sha256(*(file_sha256(p) for p in h5_files(d, s)))[:16] for s in SPLITS}
        else:
            idx = {s: txt_index(d, s, names) for s in SPLITS}  # both lists complete before any conversion
            read = {s: read_txt_split(d, s, names, self.cache_dir, idx[s]) for s in SPLITS}
            splits = {s: r[0] for s, r in read.items()}
            source["sha256"] = {s: array_sha256(sp.points, sp.labels)[:16] for s, sp in splits.items()}
            source["converted"] = {s: r[1] for s, r in read.items()}
        if manifest:
            source["export_of"] = manifest.get("source")
        return splits["train"], splits["test"], names, source

    def expected(self, variant: str, root: str | None) -> dict[str, Any]:
        fmt, d = locate(variant, root)
        manifest = read_manifest(d) or read_manifest(_root(root))
        points = TXT_POINTS if fmt == "normal_resampled" else POINTS[fmt]
        if manifest:
            return {"counts": manifest["counts"], "points": manifest.get("points", points),
                    "classes": len(manifest["class_names"]), "format": fmt,
                    "basis": "export manifest"}
        return {"counts": self.counts[fmt], "points": points, "classes": len(CLASSES), "format": fmt,
                "basis": "published"}

    def check_files(self, variant: str, root: str | None) -> None:
        fmt, d = locate(variant, root)
        if fmt == "fps_cache":
            for s in SPLITS:
                p = d / DAT.format(split=s)
                if not p.is_file() or p.stat().st_size == 0:
                    raise DataError(f"{p} not found or empty; {fix(fmt, d)}")
        elif fmt == "ply_hdf5_2048":
            for s in SPLITS:
                for p in h5_files(d, s):
                    h5_shapes(p, ("data", "label"), f"re-download it: {fix(fmt, d)}")
        else:
            names = class_names(d, read_manifest(d), required=True)
            for s in SPLITS:
                txt_index(d, s, names)


def export(out: Path, train: Split, test: Split, names: list[str], source: str, fmt: str) -> dict[str, Any]:
    """Write a dataset under ``out`` in one ModelNet40 distribution (+ manifest), readable by :class:`ModelNet40`."""
    import json

    d = out / DIRS[fmt]
    if fmt == "fps_cache":
        for s, data in (("train", train), ("test", test)):
            write_dat(d / DAT.format(split=s), data)
        (d / SHAPE_NAMES).write_text("\n".join(names) + "\n")
    elif fmt == "ply_hdf5_2048":
        write_h5(d, "train", train)
        write_h5(d, "test", test)
        (d / "shape_names.txt").write_text("\n".join(names) + "\n")
    else:
        if train.points.shape[1] < TXT_POINTS:
            raise DataError(f"normal_resampled stores ≥ {TXT_POINTS} points per shape; export with --points "
                            f"{TXT_POINTS} or more")
        write_txt(d, train, test, names)
    manifest = {"format": f"modelnet40/{fmt}", "source": source, "class_names": list(names),
                "counts": {"train": len(train), "test": len(test)},
                "points": TXT_POINTS if fmt == "normal_resampled" else int(train.points.shape[1])}
    (d / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
