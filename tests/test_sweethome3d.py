"""sweethome3d: catalogues written here in the exact .sh3f format (a zip with PluginFurnitureCatalog.properties,
OBJ + MTL per model), the class table, sampling, caching, splits, attributions and errors; plus one test on
the real Debian package."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from peft3d.core.digest import file_sha256
from peft3d.core.errors import DataError
from peft3d.datasets import sh3f, sweethome3d

POINTS = 128
HEADER = """# PluginFurnitureCatalog.properties
#
# Copyright (c) 2013-2020 test.
#
id=Test#Catalogue
name=Test catalogue
description=Models for the test suite
version=1.8
license=Creative Commons Attribution 3.0 license
provider=tests

"""
# (name, category, shape, doorOrWindow, extra keys)
MODELS = [("Chair", "Living room", "chair"), ("Armchair", "Living room", "chair"), ("Bar stool", "Kitchen", "chair"),
          ("Folding chair", "Office", "chair"), ("Table", "Kitchen", "table"), ("Coffee table", "Living room", "table"),
          ("Desk", "Office", "table"), ("Round table", "Kitchen", "table"), ("Lamp", "Lights", "lamp"),
          ("Desk lamp", "Lights", "lamp"), ("Ceiling lamp", "Lights", "lamp"), ("Street light", "Exterior", "lamp"),
          ("Toaster", "Kitchen", "box"), ("Toilet paper dispenser", "Bathroom", "box")]


def _mesh_obj(shape: str, i: int) -> str:
    import trimesh

    if shape == "chair":
        parts = [trimesh.creation.box((0.5, 0.05, 0.5)), trimesh.creation.box((0.5, 0.5, 0.05))]
        parts[1].apply_translation((0, 0.25, -0.25))
        m = trimesh.util.concatenate(parts)
    elif shape == "table":
        m = trimesh.creation.box((1.2 + 0.1 * i, 0.05, 0.8))
    elif shape == "lamp":
        m = trimesh.creation.cylinder(radius=0.1, height=1.0 + 0.1 * i, sections=12)
    else:
        m = trimesh.creation.icosphere(subdivisions=1)
    text = trimesh.exchange.obj.export_obj(m, include_normals=False, include_texture=False)
    return f"mtllib model{i}.mtl\nusemtl wood\n" + text


def write_catalogue(path: Path, models=MODELS, prefix: str = "cat", broken: dict[int, str] | None = None) -> Path:
    """A .sh3f as Sweet Home 3D writes it: header + model#N keys (leading '/', multi-part folders), per-model
    OBJ + MTL, a LICENSE.TXT and a localised properties file that must be ignored."""
    lines, broken = [HEADER], broken or {}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("LICENSE.TXT", "CC-BY 3.0")
        for n, (name, category, shape) in enumerate(models, 1):
            folder = f"{prefix}/model{n}"
            lines.append(f"id#{n}=Test#{prefix}{n}\nname#{n}={name}\ntags#{n}=test\ncategory#{n}={category}\n"
                         f"icon#{n}=/{prefix}/model{n}.png\nmodel#{n}=/{folder}/model{n}.obj\n"
                         f"multiPartModel#{n}=true\nwidth#{n}=50\ndepth#{n}=50\nheight#{n}=90\nmovable#{n}=true\n"
                         f"doorOrWindow#{n}=false\ncreator#{n}=Cr\\u00e9ator {n % 3}\n")
            if n == 2:
                lines.append(f"license#{n}=CC0\n")
            if n == 5:  # lying on its side in the OBJ: the catalogue's rotation stands it up
                lines.append(f"modelRotation#{n}=1 0 0 0 0 1 0 -1 0\n")
            if broken.get(n) != "missing":
                z.writestr(f"{folder}/model{n}.obj", broken.get(n) or _mesh_obj(shape, n))
            z.writestr(f"{folder}/model{n}.mtl", "newmtl wood\nKd 0.5 0.3 0.1\n")
        z.writestr(sh3f.PROPERTIES, "".join(lines).encode("latin-1"))
        z.writestr("PluginFurnitureCatalog_fr.properties", "name#1=Chaise\n")
    return path


@pytest.fixture
def root(tmp_path) -> Path:
    r = tmp_path / "furniture"
    r.mkdir()
    write_catalogue(r / "Test.sh3f")
    return r


def _prepare(root: Path, tmp_path: Path, **kw):
    path = sweethome3d.prepare(str(root), POINTS, cache_dir=str(tmp_path / "cache"), log=lambda *_: None, **kw)
    arrays, meta = sweethome3d.read_cached(path)
    return path, arrays, meta


def test_properties_parser_handles_escapes_comments_and_continuations():
    text = "# comment\n! other\nkey=value\nname#1=Cr\\u00e9ator\\tX\nlong = a \\\n    b\nsep:colon\nempty=\n"
    p = sh3f.parse_properties(text)
    assert p == {"key": "value", "name#1": "Créator\tX", "long": "a b", "sep": "colon", "empty": ""}


def test_class_table_on_real_names():
    def m(name, cat="Living room", dw=False):
        return sh3f.Model("c", 1, "x", name, cat, "a.obj", "", "", dw, None)

    expect = {"Sink cabinet": "sink", "Toilet paper dispenser": None, "Toilets unit": "toilet",
              "Bedside table": "cabinet", "Wheelchair": None, "Armchair": "chair", "Woman shoes": None,
              "Sitting female": "person", "Corner sofa": "sofa", "Wall lamp artwork": None, "Coffee table": "table",
              # table v2: names that say what the object is, and the look-alikes the exclusions keep out
              "Wall double socket": "outlet", "Square dimmer switch": "outlet", "Rounded type G plug": "outlet",
              "Medicine bottle": "bottle", "Flacon": "bottle", "Beer glass": "cup", "Coffee mug": "cup",
              "Glass table": "table", "Cup cake": None, "Glasses": None, "Plate, glass and cutlery": None,
              "Microwave": "stove", "Induction cooker 4 zones": "stove", "Range hood": None,
              "Hanging clothes": "clothing", "Trousers": "clothing", "Clothes basket": None, "Clothes horse": None,
              "Clothes washing machine": None, "Suitcase": None, "Siamese cat": "animal", "Bulldog": "animal",
              "Rocking horse": None, "Dog house": None, "Hot dog": None, "Roasted chicken": None}
    for name, cls in expect.items():
        assert sh3f.classify(m(name)) == cls, name
    assert sh3f.classify(m("Seat Leon", "Vehicles")) == "vehicle"
    assert sh3f.classify(m("Glass door", dw=True)) == "door" and sh3f.classify(m("Glass door")) is None
    assert sh3f.classify(m("Double-hung window", dw=True)) == "window"


def test_prepare_classifies_samples_normalises_and_records_identity(root, tmp_path):
    path, arrays, meta = _prepare(root, tmp_path)
    pts, y = arrays["points"], arrays["labels"]
    assert pts.shape == (12, POINTS, 3) and pts.dtype == np.float32
    names = [meta["classes"][i] for i in y]
    assert names == ["chair"] * 4 + ["table"] * 4 + ["lamp"] * 4
    np.testing.assert_allclose(pts.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(pts, axis=-1).max(axis=1), 1, rtol=1e-5)
    assert [u["name"] for u in meta["unmatched"]] == ["Toaster", "Toilet paper dispenser"]
    cat = meta["catalogues"][0]
    assert cat["version"] == "1.8" and cat["sha256"] == file_sha256(root / "Test.sh3f")
    assert meta["class_table_sha256"] == sweethome3d.class_table_digest() and meta["skipped_count"] == 0
    # attributions travel per model; a per-model licence overrides the catalogue's; \u escapes decoded
    m1, m2 = meta["models"][:2]
    assert m1["creator"] == "Créator 1" and m1["licence"] == "Creative Commons Attribution 3.0 license"
    assert m2["licence"] == "CC0" and m2["obj"] == "cat/model2/model2.obj"
    # cached: a second prepare reuses the file (same name, untouched), and sampling is seeded
    mtime = path.stat().st_mtime_ns
    again, arrays2, _ = _prepare(root, tmp_path)
    assert again == path and path.stat().st_mtime_ns == mtime and np.array_equal(arrays2["points"], pts)
    other = sweethome3d.prepare(str(root), POINTS, cache_dir=str(tmp_path / "cache2"), log=lambda *_: None)
    assert np.array_equal(sweethome3d.read_cached(other)[0]["points"], pts)


def test_model_rotation_stands_the_model_up(tmp_path):
    r = tmp_path / "rot"
    r.mkdir()
    write_catalogue(r / "Test.sh3f")
    _, arrays, meta = _prepare(r, tmp_path)
    table = arrays["points"][4]  # model 5: a flat box rotated by modelRotation (y <-> z)
    extent = table.max(axis=0) - table.min(axis=0)
    assert extent[2] < 0.1 < extent[1]  # thin axis moved from y to z


def test_splits_are_stratified_seeded_and_repeated(root, tmp_path, monkeypatch):
    monkeypatch.setenv("PEFT3D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sweethome3d, "POINTS", POINTS)
    fam = sweethome3d.SweetHome3D()
    tests = []
    holdouts = [v for v in fam.variants if v.startswith("s")]
    for v in holdouts:
        train, test, names, source = fam.load_raw(v, str(root))
        assert sorted(n for n in np.bincount(test.labels).tolist() if n) == [1, 1, 1]  # round(0.25 * 4) per class
        assert len(train) == 9 and source["split"]["seed"] == sweethome3d.SEED + fam.variants.index(v)
        tests.append(test.points.tobytes())
    assert len(set(tests)) > 1  # the repeated splits differ
    assert fam.load_raw("s0", str(root))[1].points.tobytes() == tests[0]  # and are deterministic
    data = fam.load("s2", str(root), val_fraction=0.2, split_seed=0)
    assert data.num_classes == 19 and len(data.train) + len(data.val) == 9


def test_folds_test_every_model_once(root, tmp_path, monkeypatch):
    monkeypatch.setenv("PEFT3D_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(sweethome3d, "POINTS", POINTS)
    fam = sweethome3d.SweetHome3D()
    tested, sizes = [], []
    for i in range(sweethome3d.FOLDS):
        train, test, _, source = fam.load_raw(f"f{i}", str(root))
        assert len(train) + len(test) == 12 and source["split"] == {"folds": 5, "fold": i,
                                                                    "seed": sweethome3d.FOLD_SEED}
        tested += [p.tobytes() for p in test.points]
        sizes.append(len(test))
    assert len(tested) == len(set(tested)) == 12 and sorted(sizes) == [2, 2, 2, 3, 3]
    monkeypatch.setattr(sweethome3d.SweetHome3D, "variants", (*fam.variants, "f1_n1"))  # a cap these 12 models feel
    few = fam.load("f1_n1", str(root))
    full = fam.load("f1", str(root))
    assert np.array_equal(few.test.points, full.test.points) and np.array_equal(few.val.points, full.val.points)
    assert np.bincount(few.train.labels).max() == 1 < np.bincount(full.train.labels).max()


def test_missing_catalogue_and_corrupt_zip_are_named(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=rf"no \.sh3f catalogue in {empty}"):
        _prepare(empty, tmp_path)
    r = tmp_path / "corrupt"
    r.mkdir()
    write_catalogue(r / "Good.sh3f")
    (r / "Bad.sh3f").write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(DataError, match=r"Bad\.sh3f is not a readable zip archive.*--skip-broken"):
        _prepare(r, tmp_path)
    _, arrays, meta = _prepare(r, tmp_path, skip_broken=True)
    assert meta["skipped_catalogues"] == ["Bad.sh3f"] and len(arrays["labels"]) == 12


def test_unreadable_obj_named_and_skipped_only_on_request(tmp_path):
    r = tmp_path / "broken"
    r.mkdir()
    write_catalogue(r / "Test.sh3f", broken={3: "this is not an OBJ file\x00\x01", 6: "missing"})
    with pytest.raises(DataError, match=r"Test\.sh3f: cat/model3/model3\.obj .*(not a readable OBJ|no surface)"):
        _prepare(r, tmp_path)
    _, arrays, meta = _prepare(r, tmp_path, skip_broken=True)
    assert meta["skipped_count"] == 2 and len(arrays["labels"]) == 10
    assert any("model6.obj is listed in the catalogue but missing" in s["error"] for s in meta["skipped"])


def _bench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, **(env or {}))
    e["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + e.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "peft3d", *args], capture_output=True, text=True, env=e,
                          timeout=600)


def test_cli_prepare_errors_are_one_line(tmp_path):
    r = _bench("data", "prepare", "sweethome3d", "--root", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no .sh3f catalogue in" in r.stderr
    r = _bench("data", "prepare", "synthetic")
    assert r.returncode == 2 and "needs no preparing" in r.stderr


REAL_COUNTS = {"animal": 9, "bed": 18, "bottle": 11, "cabinet": 36, "chair": 65, "clothing": 10, "cup": 10, "door": 15,
               "lamp": 30, "outlet": 33, "person": 29, "plant": 43, "sink": 11, "sofa": 23, "stove": 11, "table": 46,
               "toilet": 8, "vehicle": 26, "window": 17}


@pytest.mark.skipif(not sh3f.catalogue_files(sh3f.INSTALLED),
                    reason=f"Debian package {sh3f.DEB_PACKAGE} is not installed (.ci/run installs it: "
                           f"apt-get install {sh3f.DEB_PACKAGE})")
def test_real_package_prepares_checks_valid_and_shows_attributions(tmp_path):
    env = {"PEFT3D_CACHE": str(tmp_path / "cache")}
    r = _bench("data", "prepare", "sweethome3d", env=env)
    assert r.returncode == 0, r.stderr
    assert "451 models" in r.stdout and "skipped as broken: 0 models" in r.stdout
    r = _bench("data", "check", "sweethome3d", "--json", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["valid"] and report["class_names"] == sorted(REAL_COUNTS)
    per_class = np.add(report["per_class"]["train"], report["per_class"]["test"]).tolist()
    assert dict(zip(report["class_names"], per_class, strict=True)) == REAL_COUNTS
    assert {c["version"] for c in report["source"]["catalogues"]} == {"1.8"}
    r = _bench("data", "info", "sweethome3d", env=env)
    assert r.returncode == 0 and "Scopia.sh3f" in r.stdout and "creators: Kator Legaz (47)" in r.stdout
    assert "Public domain" in r.stdout and "Creative Commons Attribution 3.0" in r.stdout


def _stand_in_apt(tmp_path, monkeypatch) -> Path:
    """Stand-in ``apt-get`` and ``dpkg-deb`` on PATH that record their arguments and extract a test catalogue;
    no catalogue installed. Returns the log of calls."""
    src = write_catalogue(tmp_path / "Test.sh3f")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "apt-get $*" >> {log}\n'
                                     'echo deb > sweethome3d-furniture_1.8-1_all.deb\n')
    (bin_dir / "dpkg-deb").write_text(f'#!/bin/sh\necho "dpkg-deb $*" >> {log}\n'
                                      f'mkdir -p "$3/{sh3f.IN_DEB}" && cp {src} "$3/{sh3f.IN_DEB}/"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(sh3f, "INSTALLED", tmp_path / "not-installed")
    return log


def test_download_uses_apt_get_download_and_dpkg_deb(tmp_path, monkeypatch):
    """No catalogue installed or given: prepare fetches the .deb with ``apt-get download`` and extracts it with
    ``dpkg-deb -x`` into the cache (stand-in tools on PATH record their arguments and do the same)."""
    log = _stand_in_apt(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    cache_dir = tmp_path / "cache"
    with pytest.raises(DataError, match=r"catalogues not found \(looked in .*\); fix: apt-get install "
                                        r"sweethome3d-furniture"):
        sweethome3d.prepare(None, POINTS, cache_dir=str(cache_dir), log=lambda *_: None)
    path = sweethome3d.prepare(None, POINTS, cache_dir=str(cache_dir), download=True, log=lambda *_: None)
    calls = log.read_text().splitlines()
    assert calls[0] == "apt-get download sweethome3d-furniture" and calls[1].startswith("dpkg-deb -x ")
    _, meta = sweethome3d.read_cached(path)
    assert "extracted in" in meta["origin"] and len(meta["models"]) == 12
    # the extracted copy is found again without downloading
    sweethome3d.prepare(None, POINTS, cache_dir=str(cache_dir), download=True, log=lambda *_: None)
    assert len(log.read_text().splitlines()) == 2


def test_download_in_default_cache_is_found_under_another_cache(tmp_path, monkeypatch):
    """`bench data prepare sweethome3d` extracts the .deb under the default cache; `bench tune --results DIR`
    then sets PEFT3D_CACHE to DIR/cache. The extracted copy must still be found there (no second download), the
    arrays built in the active cache, and a missing catalogue named with every place looked in."""
    log = _stand_in_apt(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PEFT3D_CACHE", raising=False)
    sweethome3d.prepare(None, POINTS, download=True, log=lambda *_: None)
    assert (tmp_path / "results" / "cache" / "sweethome3d" / "deb" / sh3f.IN_DEB / "Test.sh3f").exists()
    study_cache = tmp_path / "study" / "cache"
    monkeypatch.setenv("PEFT3D_CACHE", str(study_cache))
    path = sweethome3d.prepare(None, POINTS, log=lambda *_: None)
    assert path.parent == study_cache / "sweethome3d" and len(log.read_text().splitlines()) == 2
    _, meta = sweethome3d.read_cached(path)
    assert str(Path("results") / "cache" / "sweethome3d" / "deb") in meta["origin"]
    sweethome3d.SweetHome3D().check_files("f0", None)  # the check `bench run` does first finds it too
    monkeypatch.chdir(tmp_path / "study")  # no default cache here: the error names both places
    with pytest.raises(DataError, match=r"looked in .*not-installed, .*study/cache/sweethome3d/deb, "
                                        r"results/cache/sweethome3d/deb\); fix: apt-get install"):
        sweethome3d.prepare(None, POINTS, log=lambda *_: None)
