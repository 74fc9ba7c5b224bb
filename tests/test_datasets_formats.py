"""ScanObjectNN and ModelNet40 readers on small files written in each published format (right key names and
dtypes), corrupted files, the restricted unpickler, and the export round trip through the real readers."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from peft3d.core.errors import DataError
from peft3d.datasets import DATASETS, check_root, modelnet40, scanobjectnn, split_name
from peft3d.datasets.io import safe_unpickle
from peft3d.datasets.modelnet40 import ModelNet40
from peft3d.datasets.scanobjectnn import ScanObjectNN
from peft3d.datasets.synthetic import Synthetic

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PEFT3D_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def small_synthetic(monkeypatch):
    monkeypatch.setattr(Synthetic, "TRAIN_PER_CLASS", 3)
    monkeypatch.setattr(Synthetic, "TEST_PER_CLASS", 2)


def clouds(n: int, p: int, c: int) -> tuple[np.ndarray, np.ndarray]:
    return RNG.normal(size=(n, p, 3)).astype(np.float32), (np.arange(n) % c)


# ---- writers that follow the official files byte-for-byte in keys and dtypes (not peft3d's own writers) ----------

def write_scan(root: Path, variant: str = "pb_t50_rs", n=(30, 15), p=64, label_dtype="uint8", **over) -> Path:
    sub, pattern = scanobjectnn.LAYOUT[variant]
    for split, count in zip(("training", "test"), n, strict=True):
        pts, lab = clouds(count, p, 15)
        data = over.get("data", pts) if split == "training" else pts
        label = over.get("label", lab) if split == "training" else lab
        (root / sub).mkdir(parents=True, exist_ok=True)
        with h5py.File(root / sub / pattern.format(split=split), "w") as f:
            f.create_dataset("data", data=data, compression="gzip")
            f.create_dataset("label", data=np.asarray(label).astype(label_dtype))
            f.create_dataset("mask", data=np.zeros(data.shape[:2], np.int8))  # the real files carry it too
    return root


def write_mn_h5(d: Path, n=(45, 40), p=32) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for split, count, shards in (("train", n[0], 2), ("test", n[1], 1)):
        pts, lab = clouds(count, p, 40)
        names = []
        for i, idx in enumerate(np.array_split(np.arange(count), shards)):
            with h5py.File(d / f"ply_data_{split}{i}.h5", "w") as f:
                f.create_dataset("data", data=pts[idx])
                f.create_dataset("label", data=lab[idx].astype(np.uint8)[:, None])
                f.create_dataset("normal", data=np.zeros_like(pts[idx]))
            names.append(f"data/modelnet40_ply_hdf5_2048/ply_data_{split}{i}.h5")
        (d / f"{split}_files.txt").write_text("\n".join(names) + "\n")
    (d / "shape_names.txt").write_text("\n".join(modelnet40.CLASSES) + "\n")
    return d


def write_mn_dat(d: Path, n=(41, 40), p=16, protocol=4) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", n[0]), ("test", n[1])):
        pts, lab = clouds(count, p, 40)
        payload = [[np.concatenate([x, np.zeros_like(x)], 1) for x in pts],  # (P, 6) xyz + normals
                   [np.array([y], dtype=np.int32) for y in lab]]
        with open(d / f"modelnet40_{split}_8192pts_fps.dat", "wb") as f:
            pickle.dump(payload, f, protocol=protocol)
    return d


def write_mn_txt(d: Path, rows: int, n=(40, 40)) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "modelnet40_shape_names.txt").write_text("\n".join(modelnet40.CLASSES) + "\n")
    k = 0
    for split, count in (("train", n[0]), ("test", n[1])):
        ids = []
        for i in range(count):
            cls = modelnet40.CLASSES[i % 40]
            k += 1
            sid = f"{cls}_{k:04d}"
            (d / cls).mkdir(exist_ok=True)
            np.savetxt(d / cls / f"{sid}.txt", RNG.normal(size=(rows, 6)), fmt="%.6f", delimiter=",")
            ids.append(sid)
        (d / f"modelnet40_{split}.txt").write_text("\n".join(ids) + "\n")
    return d


# ---- registry ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["scanobjectnn/pb_t50_rs", "scanobjectnn/obj_bg", "scanobjectnn/obj_only",
                                  "modelnet40", "modelnet40/fps_cache", "synthetic/scan"])
def test_grid_names_resolve(name):
    family, variant = split_name(name)
    meta = DATASETS.meta(family)
    assert (variant or meta["default_variant"]) in meta["variants"]
    assert {"variants", "classes", "default_variant", "needs_root", "summary", "counts", "tag"} <= set(meta)
    assert DATASETS.get(family).variants == meta["variants"]  # the class reads the registry


def test_registry_metadata_fits_each_reader():
    from peft3d.datasets import modelnet40, scanobjectnn, synthetic

    assert set(scanobjectnn.LAYOUT) == set(DATASETS.meta("scanobjectnn")["variants"])
    assert set(modelnet40.FORMATS) | {"auto"} == set(DATASETS.meta("modelnet40")["variants"])
    assert len(scanobjectnn.CLASSES) == DATASETS.meta("scanobjectnn")["classes"] == 15
    assert len(modelnet40.CLASSES) == DATASETS.meta("modelnet40")["classes"] == 40
    assert len(synthetic.SHAPES) == DATASETS.meta("synthetic")["classes"] == 12


def test_published_counts_in_registry():
    assert DATASETS.meta("scanobjectnn")["counts"]["pb_t50_rs"] == {"train": 11416, "test": 2882}
    assert DATASETS.meta("modelnet40")["counts"]["normal_resampled"] == {"train": 9843, "test": 2468}


# ---- ScanObjectNN -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["pb_t50_rs", "obj_bg", "obj_only"])
def test_scanobjectnn_variants_read(tmp_path, variant):
    write_scan(tmp_path / "h5_files", variant)
    data = ScanObjectNN().load(f"{variant}", str(tmp_path / "h5_files"))
    assert data.num_classes == 15 and len(data.test) == 15 and len(data.train) + len(data.val) == 30
    assert data.train.points.dtype == np.float32 and data.train.labels.dtype == np.int64
    assert data.identity["format"] == "scanobjectnn_h5" and len(data.identity["sha256"]["train"]) == 16
    assert check_root(f"scanobjectnn/{variant}", None, str(tmp_path / "h5_files")) is None


def test_scanobjectnn_root_may_be_parent_or_subfolder(tmp_path):
    write_scan(tmp_path / "h5_files")
    for root in (tmp_path, tmp_path / "h5_files" / "main_split"):
        assert len(ScanObjectNN().load_raw("pb_t50_rs", str(root))[1]) == 15


@pytest.mark.parametrize("dtype", ["int64", "int32", "float32"])
def test_scanobjectnn_label_dtypes(tmp_path, dtype):
    write_scan(tmp_path, label_dtype=dtype)
    train, *_ = ScanObjectNN().load_raw("pb_t50_rs", str(tmp_path))
    assert train.labels.dtype == np.int64 and train.labels.max() == 14


def test_scanobjectnn_missing_names_file_and_fix(tmp_path):
    with pytest.raises(DataError) as e:
        ScanObjectNN().load_raw("pb_t50_rs", str(tmp_path))
    msg = str(e.value)
    assert "main_split/training_objectdataset_augmentedrot_scale75.h5 not found" in msg
    assert "hkust-vgd.github.io/scanobjectnn" in msg and "\n" not in msg
    assert "not found" in check_root("scanobjectnn", None, str(tmp_path))
    assert "needs its files" in check_root("scanobjectnn", None, None)


def test_truncated_hdf5_is_a_data_error(tmp_path):
    write_scan(tmp_path)
    path = tmp_path / "main_split" / "training_objectdataset_augmentedrot_scale75.h5"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"unreadable HDF5 .*truncated or corrupt"):
        ScanObjectNN().load_raw("pb_t50_rs", str(tmp_path))
    assert "unreadable HDF5" in check_root("scanobjectnn", None, str(tmp_path))


@pytest.mark.parametrize("over, pattern", [
    ({"data": np.zeros((30, 64, 2), np.float32)}, r"shape \(N, P, 3\)"),
    ({"data": np.zeros((30, 64, 3), np.int16)}, "floating point"),
    ({"label": np.arange(29)}, r"labels must have shape \(30,\)"),
    ({"label": np.full(30, 15)}, r"30 label\(s\) outside \[0, 14\]"),
])
def test_scanobjectnn_wrong_content(tmp_path, over, pattern):
    write_scan(tmp_path, **over)
    with pytest.raises(DataError, match=pattern) as e:
        ScanObjectNN().load_raw("pb_t50_rs", str(tmp_path))
    assert "training_objectdataset_augmentedrot_scale75.h5" in str(e.value)


def test_nan_points_named(tmp_path):
    pts, _ = clouds(30, 64, 15)
    pts[7, 3] = np.nan
    pts[9, 0, 1] = np.inf
    write_scan(tmp_path, data=pts)
    with pytest.raises(DataError, match=r"2 sample\(s\) contain NaN/Inf coordinates \(first: #7\)"):
        ScanObjectNN().load_raw("pb_t50_rs", str(tmp_path))


def test_missing_key(tmp_path):
    (tmp_path / "main_split").mkdir()
    with h5py.File(tmp_path / "main_split" / "training_objectdataset_augmentedrot_scale75.h5", "w") as f:
        f.create_dataset("points", data=np.zeros((2, 4, 3), np.float32))
    with pytest.raises(DataError, match=r"missing dataset\(s\) \['data', 'label'\]"):
        ScanObjectNN().load_raw("pb_t50_rs", str(tmp_path))


# ---- ModelNet40 -------------------------------------------------------------------------------------------------

def test_modelnet40_h5(tmp_path):
    write_mn_h5(tmp_path / "modelnet40_ply_hdf5_2048")
    for variant in ("auto", "ply_hdf5_2048"):
        train, test, names, src = ModelNet40().load_raw(variant, str(tmp_path))
        assert (len(train), len(test), len(names), src["format"]) == (45, 40, 40, "ply_hdf5_2048")
    norms = np.linalg.norm(train.points, axis=-1).max(axis=1)
    assert np.allclose(norms, 1, atol=1e-5) and np.allclose(train.points.mean(1), 0, atol=1e-5)  # unit sphere
    assert check_root("modelnet40", None, str(tmp_path)) is None


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_modelnet40_pointbert_cache(tmp_path, protocol):
    d = write_mn_dat(tmp_path / "modelnet40_normal_resampled", protocol=protocol)
    train, test, names, src = ModelNet40().load_raw("auto", str(tmp_path))
    assert src["format"] == "fps_cache" and names == modelnet40.CLASSES
    assert train.points.shape == (41, 16, 3) and train.labels[40] == 0 and test.labels.dtype == np.int64
    with open(d / "modelnet40_test_8192pts_fps.dat", "rb") as f:
        ref = pickle.load(f)  # our own file, in the test only
    raw = ref[0][5][:, :3]
    raw = (raw - raw.mean(0)) / np.linalg.norm(raw - raw.mean(0), axis=1).max()
    np.testing.assert_allclose(test.points[5], raw, atol=1e-6)


def test_modelnet40_prefers_cache_then_h5(tmp_path):
    write_mn_h5(tmp_path / "modelnet40_ply_hdf5_2048")
    assert modelnet40.locate("auto", str(tmp_path))[0] == "ply_hdf5_2048"
    write_mn_dat(tmp_path / "modelnet40_normal_resampled")
    assert modelnet40.locate("auto", str(tmp_path))[0] == "fps_cache"
    assert modelnet40.locate("ply_hdf5_2048", str(tmp_path))[0] == "ply_hdf5_2048"


def test_modelnet40_txt_converted_once(tmp_path, monkeypatch):
    monkeypatch.setattr(modelnet40, "TXT_POINTS", 20)
    d = write_mn_txt(tmp_path / "modelnet40_normal_resampled", rows=24)
    fam = ModelNet40()
    train, _, _, src = fam.load_raw("normal_resampled", str(tmp_path))
    assert train.points.shape == (40, 20, 3) and src["format"] == "normal_resampled"
    assert train.labels.tolist() == list(range(40))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(src["converted"].values())
    monkeypatch.setattr(modelnet40, "_parse_txt", lambda *a: pytest.fail("parsed again despite the cache"))
    again = fam.load_raw("auto", str(tmp_path))[0]
    np.testing.assert_array_equal(again.points, train.points)
    assert check_root("modelnet40/normal_resampled", None, str(d)) is None


def test_modelnet40_missing_split_list(tmp_path, monkeypatch):
    monkeypatch.setattr(modelnet40, "TXT_POINTS", 20)
    d = write_mn_txt(tmp_path, rows=20, n=(3, 3))
    (d / "modelnet40_train.txt").unlink()
    with pytest.raises(DataError, match=r"modelnet40_train.txt not found; it lists the train shapes"):
        ModelNet40().load_raw("auto", str(tmp_path))
    assert "modelnet40_train.txt not found" in check_root("modelnet40", None, str(tmp_path))
    assert not (tmp_path / "cache").exists()


def test_modelnet40_truncated_txt_leaves_no_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(modelnet40, "TXT_POINTS", 20)
    d = write_mn_txt(tmp_path, rows=20, n=(3, 3))
    victim = d / "bathtub" / "bathtub_0002.txt"
    victim.write_text("\n".join(victim.read_text().splitlines()[:11]) + "\n0.1,0.2")
    with pytest.raises(DataError, match="bathtub_0002.txt: unreadable"):
        ModelNet40().load_raw("normal_resampled", str(tmp_path))
    victim.write_text("\n".join(victim.read_text().splitlines()[:11]) + "\n")
    with pytest.raises(DataError, match=r"bathtub_0002.txt: 11 rows .* truncated"):
        ModelNet40().load_raw("normal_resampled", str(tmp_path))
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_modelnet40_nothing_found(tmp_path):
    with pytest.raises(DataError, match="ModelNet40: nothing found under") as e:
        ModelNet40().load_raw("auto", str(tmp_path))
    assert "Point-BERT" in str(e.value) and "\n" not in str(e.value)


# ---- restricted unpickler -----------------------------------------------------------------------------------------

class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    d = tmp_path / "mn"
    d.mkdir()
    with open(d / "modelnet40_train_8192pts_fps.dat", "wb") as f:
        pickle.dump([[_Evil(marker)], [np.array([0], np.int32)]], f)
    write_mn_dat(tmp_path / "other")  # a valid test file next to it is irrelevant
    (tmp_path / "other" / "modelnet40_test_8192pts_fps.dat").replace(d / "modelnet40_test_8192pts_fps.dat")
    with pytest.raises(DataError, match=r"refuses to unpickle posix\.system|refuses to unpickle nt\.system") as e:
        ModelNet40().load_raw("auto", str(d))
    assert "may be malicious" in str(e.value) and not marker.exists()


@pytest.mark.parametrize("payload", [
    b"cbuiltins\neval\n(S'1+1'\ntR.",  # protocol 0 GLOBAL builtins.eval
    pickle.dumps(np.array([object()], dtype=object)),  # object arrays smuggle arbitrary objects
])
def test_restricted_unpickler_rejects(tmp_path, payload):
    path = tmp_path / "x.dat"
    path.write_bytes(payload)
    with pytest.raises(DataError, match="refuses to unpickle|object array"):
        safe_unpickle(path, "fix")


def test_restricted_unpickler_truncated(tmp_path):
    path = tmp_path / "x.dat"
    path.write_bytes(pickle.dumps([np.zeros((4, 3), np.float32)])[:-20])
    with pytest.raises(DataError, match="not a readable pickle"):
        safe_unpickle(path, "fix")


# ---- export round trips: the real readers run on every CI run ------------------------------------------------------

def test_synthetic_scanobjectnn_export_round_trip(tmp_path, small_synthetic):
    syn = Synthetic()
    train, test = syn.splits("scan", 2048)
    scanobjectnn.export(tmp_path, train, test, list(syn.load_raw("scan", None)[2]), "synthetic/scan")
    with h5py.File(tmp_path / "main_split" / "training_objectdataset_augmentedrot_scale75.h5") as f:
        assert f["data"].dtype == np.float32 and f["data"].shape == (36, 2048, 3) and f["label"].dtype == np.uint8
    r_train, r_test, names, src = ScanObjectNN().load_raw("pb_t50_rs", str(tmp_path))
    np.testing.assert_array_equal(r_train.points, train.points)
    np.testing.assert_array_equal(r_test.labels, test.labels)
    assert names[0] == "sphere" and len(names) == 12 and src["export_of"] == "synthetic/scan"
    data = DATASETS.get("scanobjectnn")().load(None, str(tmp_path))
    assert data.num_classes == 12 and data.identity["source"] == "scanobjectnn/pb_t50_rs"


@pytest.mark.parametrize("fmt", ["fps_cache", "ply_hdf5_2048", "normal_resampled"])
def test_synthetic_modelnet40_export_round_trip(tmp_path, small_synthetic, monkeypatch, fmt):
    monkeypatch.setattr(modelnet40, "TXT_POINTS", 64)
    syn = Synthetic()
    train, test = syn.splits("clean", 64)
    modelnet40.export(tmp_path, train, test, list(syn.load_raw("clean", None)[2]), "synthetic/clean", fmt)
    r_train, r_test, names, src = ModelNet40().load_raw(fmt, str(tmp_path))
    assert src["format"] == fmt and len(names) == 12
    np.testing.assert_allclose(r_train.points, train.points, atol=2e-5)  # txt keeps 6 decimals
    np.testing.assert_array_equal(r_test.labels, test.labels)
