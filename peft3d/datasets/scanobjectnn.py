"""ScanObjectNN (Uy et al., ICCV 2019) from the official ``h5_files`` release.

Three variants, 15 classes, 2048 points per object, HDF5 keys ``data`` (N, 2048, 3) float32 and ``label`` (N,)
(an integer dtype; read as int64). Points are used as stored (no normalisation: Any2Point only centres them,
which the protocol does). The files are the user's own download; they are checked, never modified.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from peft3d.core.digest import file_sha256
from peft3d.core.errors import DataError
from peft3d.datasets.base import DatasetFamily, Split
from peft3d.datasets.io import MANIFEST, as_labels, as_points, check_values, h5_shapes, read_h5, read_manifest

CLASSES = ["bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed", "pillow",
           "sink", "sofa", "toilet"]
POINTS = 2048
SITE = "hkust-vgd.github.io/scanobjectnn"
# variant -> (sub-folder of h5_files, file name pattern); {split} is "training" or "test"
LAYOUT = {
    "pb_t50_rs": ("main_split", "{split}_objectdataset_augmentedrot_scale75.h5"),
    "obj_bg": ("main_split", "{split}_objectdataset.h5"),
    "obj_only": ("main_split_nobg", "{split}_objectdataset.h5"),
}
SPLITS = {"train": "training", "test": "test"}
EXPORT_FORMAT = "scanobjectnn"


def file_name(variant: str, split: str) -> str:
    return LAYOUT[variant][1].format(split=SPLITS[split])


def fix(variant: str, root: Path | str) -> str:
    sub, _ = LAYOUT[variant]
    return (f"download h5_files.zip from the ScanObjectNN site ({SITE}; fill in its terms-of-use form) and unzip it "
            f"so that {Path(root) / sub / file_name(variant, 'train')} exists (see: bench data info scanobjectnn)")


def _root(root: str | None) -> Path:
    if not root:
        raise DataError("scanobjectnn needs its files: pass --root PATH (the unzipped h5_files folder) or set "
                        "data_root in the grid; see: bench data info scanobjectnn")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"ScanObjectNN: root {path} is not a folder; {fix('pb_t50_rs', path)}")
    return path


def resolve(variant: str, root: str | None) -> tuple[Path, dict[str, Path]]:
    """(root, {split: file}). Accepts ROOT = h5_files, its parent, or the variant's sub-folder itself."""
    base = _root(root)
    sub, _ = LAYOUT[variant]
    for d in (base / sub, base / "h5_files" / sub, base):
        if (d / file_name(variant, "train")).is_file() or (d / file_name(variant, "test")).is_file():
            return base, {s: d / file_name(variant, s) for s in SPLITS}
    missing = base / sub / file_name(variant, "train")
    raise DataError(f"ScanObjectNN: {missing} not found; {fix(variant, base)}")


def read_split(path: Path, num_classes: int, variant: str, root: Path) -> Split:
    f = fix(variant, root)
    arrays = read_h5(path, ("data", "label"), f"re-download it: {f}")
    where = str(path)
    points = as_points(arrays["data"], where, f"not a ScanObjectNN file; {f}")
    labels = as_labels(arrays["label"], len(points), where, f"not a ScanObjectNN file; {f}")
    check_values(points, labels, num_classes, where, f"the file is corrupt; re-download it: {f}")
    return Split(points, labels)


def write_split(path: Path, points: np.ndarray, labels: np.ndarray) -> None:
    """Write one split exactly as the official files are laid out (float32 ``data``, uint8 ``label``)."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        f.create_dataset("data", data=np.asarray(points, np.float32), compression="gzip", compression_opts=4)
        f.create_dataset("label", data=np.asarray(labels).astype(np.uint8))
    tmp.replace(path)


def export(out: Path, train: Split, test: Split, class_names: list[str], source: str,
           variant: str = "pb_t50_rs") -> dict[str, Any]:
    """Write ``train``/``test`` under ``out`` in the official layout of ``variant`` plus a manifest naming the
    real classes and counts, so the export reads back through :class:`ScanObjectNN` unchanged."""
    if len(class_names) > 256:
        raise DataError("ScanObjectNN format stores labels as uint8: at most 256 classes")
    sub, _ = LAYOUT[variant]
    files = {}
    for split, data in (("train", train), ("test", test)):
        path = out / sub / file_name(variant, split)
        write_split(path, data.points, data.labels)
        files[split] = str(path.relative_to(out))
    manifest = {"format": EXPORT_FORMAT, "variant": variant, "source": source, "class_names": list(class_names),
                "counts": {"train": len(train), "test": len(test)}, "points": int(train.points.shape[1]),
                "files": files}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


class ScanObjectNN(DatasetFamily):
    """ScanObjectNN — real-world object scans, 15 classes, 2048 points per object.

Download: request h5_files.zip on the ScanObjectNN site (hkust-vgd.github.io/scanobjectnn; a terms-of-use form
returns the link), unzip it, and pass the resulting h5_files folder as the root:

  ROOT/                                   (= h5_files; its parent works too)
    main_split/
      training_objectdataset_augmentedrot_scale75.h5   pb_t50_rs  11,416 train
      test_objectdataset_augmentedrot_scale75.h5       pb_t50_rs   2,882 test
      training_objectdataset.h5                        obj_bg      2,309 train
      test_objectdataset.h5                            obj_bg        581 test
    main_split_nobg/
      training_objectdataset.h5                        obj_only    2,309 train
      test_objectdataset.h5                            obj_only      581 test

Each file: data float32 (N, 2048, 3), label integer (N,) in [0, 14]. Only the variant you use must be present.
Point-BERT's DATASET.md (github.com/Julie-tang00/Point-BERT) describes the same layout."""

    name = "scanobjectnn"

    def load_raw(self, variant: str, root: str | None) -> tuple[Split, Split, list[str], dict[str, Any]]:
        base, files = resolve(variant, root)
        manifest = read_manifest(base)
        names = manifest["class_names"] if manifest else CLASSES
        splits = {s: read_split(p, len(names), variant, base) for s, p in files.items()}
        source: dict[str, Any] = {
            "source": f"scanobjectnn/{variant}", "format": "scanobjectnn_h5", "root": str(base),
            "files": {s: str(p) for s, p in files.items()},
            "sha256": {s: file_sha256(p)[:16] for s, p in files.items()}}
        if manifest:
            source["export_of"] = manifest.get("source")
        return splits["train"], splits["test"], list(names), source

    def expected(self, variant: str, root: str | None) -> dict[str, Any]:
        manifest = read_manifest(_root(root)) if root and Path(root).is_dir() else None
        if manifest:
            return {"counts": manifest["counts"], "points": manifest.get("points", POINTS),
                    "classes": len(manifest["class_names"]),
                    "basis": "export manifest"}
        return {"counts": self.counts[variant], "points": POINTS, "classes": len(CLASSES), "basis": "published"}

    def check_files(self, variant: str, root: str | None) -> None:
        base, files = resolve(variant, root)
        for path in files.values():
            shapes = h5_shapes(path, ("data", "label"), f"re-download it: {fix(variant, base)}")
            (dshape, _), (lshape, _) = shapes["data"], shapes["label"]
            if len(dshape) != 3 or dshape[-1] != 3 or not lshape or lshape[0] != dshape[0]:
                raise DataError(f"{path}: data {dshape} / label {lshape} is not ScanObjectNN's (N, 2048, 3) / (N,); "
                                f"{fix(variant, base)}")
