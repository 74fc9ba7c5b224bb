"""Sweet Home 3D furniture: real, licensed 3D meshes (Debian's ``sweethome3d-furniture``) as a small
ModelNet-like classification set.

``prepare`` reads the five ``.sh3f`` catalogues (:mod:`peft3d.datasets.sh3f`), keeps the models that the class
table assigns to a class (the others are listed as unmatched and left out), samples ``POINTS`` points on each
mesh surface (area-weighted, seeded per model with ``trimesh``), normalises each cloud to the unit sphere and
caches the arrays, the per-model attributions and the identity (catalogue versions and digests, class table
digest) in one ``.npz`` written atomically. Variants ``s0`` ... ``s4`` are five seeded, class-stratified
train/test splits of the same models (the classes are small: report the mean over splits).
"""
from __future__ import annotations

import io
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from peft3d.core.atomic import atomic_write
from peft3d.core.digest import array_sha256, file_sha256, parts_sha256, text_sha256
from peft3d.core.errors import DataError
from peft3d.datasets import cache, sh3f
from peft3d.datasets.base import DatasetFamily, Split

POINTS = 2048
SEED = 20261129
TEST_FRACTION = 0.25
SPLITS = 5  # hold-out variants s0..s4
FOLDS = 5  # cross-validation variants f0..f4 (one partition; every model is tested once over the folds)
FOLD_SEED = SEED + 100
FORMAT = "sweethome3d-v1"  # bump when sampling or normalisation changes (old cache entries are then ignored)


def class_table_digest() -> str:
    return text_sha256(sh3f.class_table_text())[:16]


def _rotation(m: sh3f.Model) -> np.ndarray | None:
    return None if m.rotation is None else np.asarray(m.rotation, dtype=np.float64).reshape(3, 3)


def sample_model(z: zipfile.ZipFile, m: sh3f.Model, n: int) -> np.ndarray:
    """``n`` surface points of the model's OBJ (all its parts), upright, centred, in the unit sphere; float32.
    The seed depends only on the model's id, so adding or skipping other models never changes this cloud."""
    import trimesh

    where = f"{z.filename}: {m.obj}"
    try:
        data = z.read(m.obj)
        mesh = trimesh.load(io.BytesIO(data), file_type="obj", force="mesh", skip_materials=True, process=False)
    except KeyError:
        raise DataError(f"sweethome3d: {where} is listed in the catalogue but missing from the zip") from None
    except Exception as e:  # noqa: BLE001  (any parser failure is one line naming the file)
        raise DataError(f"sweethome3d: {where} is not a readable OBJ mesh ({type(e).__name__}: "
                        f"{str(e)[:120]})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0 or not mesh.area > 0:
        raise DataError(f"sweethome3d: {where} has no surface (no faces or zero area)")
    seed = zlib.crc32(f"{SEED}:{m.catalogue}:{m.id}".encode())
    pts, _ = trimesh.sample.sample_surface(mesh, n, seed=seed)
    pts = np.asarray(pts, dtype=np.float64)
    if (rot := _rotation(m)) is not None:
        pts = pts @ rot.T
    pts -= pts.mean(axis=0)
    pts /= max(np.linalg.norm(pts, axis=1).max(), 1e-12)
    if not np.isfinite(pts).all():
        raise DataError(f"sweethome3d: {where} gives non-finite coordinates")
    return pts.astype(np.float32)


def _catalogue_record(cat: sh3f.Catalogue, digest: str) -> dict[str, Any]:
    return {"file": cat.path.name, "id": cat.id, "name": cat.name, "version": cat.version,
            "licence": cat.licence, "models": len(cat.models), "sha256": digest}


def prepare(root: str | None = None, points: int = POINTS, skip_broken: bool = False,
            cache_dir: str | None = None, download: bool = False, log=print) -> Path:
    """Build (or find) the cached arrays; returns the cache file. ``download``: fetch the Debian package with
    ``apt-get download`` when no catalogue is installed or given."""
    dl = download_dirs(cache_dir)
    try:
        files, origin = sh3f.find_catalogues(root, dl)
    except DataError:
        if not download or root:
            raise
        log(f"downloading {sh3f.DEB_PACKAGE} into {dl[0]} (apt-get download + dpkg-deb -x)")
        files, origin = sh3f.find_catalogues(None, [sh3f.download(dl[0])])
    digests = {f.name: file_sha256(f) for f in files}
    out = cache_file(digests, points, skip_broken, cache_dir)
    if out.exists() and read_cached(out) is not None:
        return out
    arrays, meta = _build(files, digests, points, skip_broken, log)
    meta.update(origin=origin, points=points, skip_broken=skip_broken)
    _save(out, arrays, meta)
    return out


def download_dirs(cache_dir: str | None) -> list[Path]:
    """Where a downloaded .deb may have been extracted: the active cache first, then the default one. Why both:
    `bench tune`/`bench run --results DIR` move the cache under DIR, so a `bench data prepare sweethome3d` done
    earlier with the default cache must still be found (the npz itself is rebuilt in the active cache)."""
    dirs = [cache.cache_dir(cache_dir) / "sweethome3d" / "deb", cache.DEFAULT / "sweethome3d" / "deb"]
    return [d for i, d in enumerate(dirs) if d.resolve() not in {e.resolve() for e in dirs[:i]}]


def cache_file(digests: dict[str, str], points: int, skip_broken: bool, cache_dir: str | None) -> Path:
    k = parts_sha256(FORMAT, sorted(digests.items()), class_table_digest(), points, SEED, skip_broken)
    return cache.cache_dir(cache_dir) / "sweethome3d" / f"sweethome3d-{points}-{k[:20]}.npz"


def _build(files: list[Path], digests: dict[str, str], points: int, skip_broken: bool, log):
    clouds, labels, models, unmatched, skipped, catalogues = [], [], [], [], [], []
    for f in files:
        try:
            cat = sh3f.read_catalogue(f)
        except DataError as e:
            if not skip_broken:
                raise DataError(f"{e} (or pass --skip-broken to leave it out)") from None
            skipped.append({"file": f.name, "error": str(e), "models": None})
            continue
        catalogues.append(_catalogue_record(cat, digests[f.name]))
        with zipfile.ZipFile(f) as z:
            for m in cat.models:
                cls = sh3f.classify(m)
                if cls is None:
                    unmatched.append({"catalogue": f.name, "name": m.name, "category": m.category})
                    continue
                try:
                    clouds.append(sample_model(z, m, points))
                except DataError as e:
                    if not skip_broken:
                        raise DataError(f"{e}; fix: reinstall {sh3f.DEB_PACKAGE}, or pass --skip-broken") from None
                    skipped.append({"file": f"{f.name}: {m.obj}", "error": str(e), "models": 1})
                    continue
                labels.append(sh3f.CLASSES.index(cls))
                models.append({"class": cls, "name": m.name, "catalogue": f.name, "id": m.id, "obj": m.obj,
                               "creator": m.creator, "licence": m.licence})
        log(f"{f.name}: {len(cat.models)} models read")
    if not clouds:
        raise DataError("sweethome3d: no model matched the class table (empty or foreign catalogues?)")
    arrays = {"points": np.stack(clouds), "labels": np.asarray(labels, dtype=np.int64)}
    meta = {"format": FORMAT, "classes": sh3f.CLASSES, "class_table": sh3f.class_table_text(),
            "class_table_sha256": class_table_digest(), "catalogues": catalogues, "models": models,
            "unmatched": unmatched, "skipped": skipped, "skipped_count": sum(s["models"] or 0 for s in skipped),
            "skipped_catalogues": [s["file"] for s in skipped if s["models"] is None],
            "sha256": array_sha256(arrays["points"], arrays["labels"])[:16]}
    return arrays, meta


def _save(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    blob = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, meta=blob, **arrays), binary=True)


def read_cached(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """(arrays, meta) of a cache file, or None if it is unreadable (then it is rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            arrays = {"points": z["points"], "labels": z["labels"]}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if meta.get("format") != FORMAT or meta.get("sha256") != array_sha256(arrays["points"], arrays["labels"])[:16]:
        return None
    return arrays, meta


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number ``(N,)`` of every sample for a class-stratified ``k``-fold partition: each class's samples in a
    seeded order are dealt round-robin, each class starting where the previous one stopped, so every class
    spreads over the folds as evenly as its size allows and the fold sizes differ by at most one. (Hand-written:
    scikit-learn's StratifiedKFold does the same but is not otherwise a dependency.)"""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    start = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold[idx] = (start + np.arange(len(idx))) % k
        start += len(idx)
    return fold


def split_of(variant: str, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(train_idx, test_idx, split record) of a variant: ``s<i>`` a seeded stratified hold-out of
    ``TEST_FRACTION``; ``f<i>`` fold ``i`` of the one seeded stratified ``FOLDS``-fold partition (test = fold i,
    train = the other folds: over ``f0``..``f4`` every model is tested exactly once)."""
    i = int(variant[1:])
    if variant.startswith("f"):
        fold = stratified_folds(labels, FOLDS, FOLD_SEED)
        return (np.flatnonzero(fold != i), np.flatnonzero(fold == i),
                {"folds": FOLDS, "fold": i, "seed": FOLD_SEED})
    seed = SEED + i
    tr, te = stratified_split(labels, TEST_FRACTION, seed)
    return tr, te, {"test_fraction": TEST_FRACTION, "seed": seed}


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx): per class ``max(1, round(fraction * n_c))`` test samples (classes of one sample
    stay in train), by a seeded permutation."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, round(fraction * len(idx))) if len(idx) >= 2 else 0
        test.append(rng.permutation(idx)[:k])
    test_idx = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(len(labels)), test_idx), test_idx


class SweetHome3D(DatasetFamily):
    """Variants, counts and the preset tag are stated in the registry (peft3d/datasets/__init__.py)."""

    name = "sweethome3d"

    def __init__(self, skip_broken: bool = False, cache_dir: str | None = None) -> None:
        self.skip_broken, self.cache_dir = skip_broken, cache_dir

    def prepared(self, root: str | None) -> tuple[dict[str, np.ndarray], dict[str, Any], Path]:
        path = prepare(root, POINTS, self.skip_broken, self.cache_dir, log=lambda *_: None)
        got = read_cached(path)
        if got is None:
            raise DataError(f"sweethome3d: cache {path} is unreadable; delete it and run bench data prepare again")
        return (*got, path)

    def load_raw(self, variant: str, root: str | None) -> tuple[Split, Split, list[str], dict[str, Any]]:
        arrays, meta, path = self.prepared(root)
        tr, te, split = split_of(variant, arrays["labels"])
        pts, y = arrays["points"], arrays["labels"]
        source = {"source": f"sweethome3d ({meta['origin']})", "format": "sh3f catalogues",
                  "files": {c["file"]: c["file"] for c in meta["catalogues"]}, "cache": str(path),
                  "catalogues": [{k: c[k] for k in ("file", "version", "sha256")} for c in meta["catalogues"]],
                  "class_table_sha256": meta["class_table_sha256"], "sha256": meta["sha256"],
                  "split": split,
                  "skipped_count": meta["skipped_count"], "unmatched_count": len(meta["unmatched"])}
        return Split(pts[tr], y[tr]), Split(pts[te], y[te]), list(meta["classes"]), source

    def prepare(self, root: str | None, points: int = POINTS, skip_broken: bool = False, log=print) -> str:
        """``bench data prepare``: build the cache (downloading the package if needed); a summary in words.
        Runs read the cache made without ``skip_broken``; a cache made with it is used by runs only when this
        family is built with ``skip_broken=True``."""
        path = prepare(root, points, skip_broken, self.cache_dir, download=True, log=log)
        arrays, meta = read_cached(path) or ({}, {})
        counts = np.bincount(arrays["labels"], minlength=len(meta["classes"]))
        unmatched = sorted({u["name"] for u in meta["unmatched"]})
        lines = [f"sweethome3d: {len(arrays['labels'])} models, {points} points each, cached in {path}",
                 f"  catalogues ({meta['origin']}): " + ", ".join(f"{c['file']} v{c['version']}"
                                                                  for c in meta["catalogues"]),
                 "  classes: " + ", ".join(f"{c} {n}" for c, n in zip(meta["classes"], counts, strict=True)),
                 f"  skipped as broken: {meta['skipped_count']} models"
                 + (f", catalogues {meta['skipped_catalogues']}" if meta["skipped_catalogues"] else ""),
                 *(f"    {s['file']}: {s['error']}" for s in meta["skipped"]),
                 f"  unmatched (left out): {len(meta['unmatched'])} models, {len(unmatched)} distinct names: "
                 + ", ".join(unmatched)]
        return "\n".join(lines)

    def expected(self, variant: str, root: str | None) -> dict[str, Any]:
        return {"counts": self.counts.get(variant), "points": POINTS, "classes": len(sh3f.CLASSES),
                "basis": "class table on package 1.8-1"}

    def check_files(self, variant: str, root: str | None) -> None:
        for f in sh3f.find_catalogues(root, download_dirs(self.cache_dir))[0]:
            sh3f.read_catalogue(f)

    def info(self) -> str:
        lines = [
            "sweethome3d — furniture meshes of Sweet Home 3D (Debian package sweethome3d-furniture: five .sh3f "
            "zip catalogues in /usr/share/sweethome3d/furniture), sampled to "
            f"{POINTS} surface points per model, unit sphere.",
            "  get it:   apt-get install sweethome3d-furniture   (or: bench data prepare sweethome3d, which "
            "downloads the .deb without root into the cache; a later --results DIR, whose cache is DIR/cache, "
            "still finds it there; or --root DIR with the .sh3f files)",
            "  prepare:  bench data prepare sweethome3d [--root DIR] [--skip-broken]",
            f"  variants s0..s{SPLITS - 1}: seeded class-stratified splits, {TEST_FRACTION:.0%} of each class "
            f"in test; f0..f{FOLDS - 1}: the folds of one seeded class-stratified {FOLDS}-fold partition (test = "
            "fold i; over the folds every model is tested once); f<i>_n<k>: fold i with at most k training models "
            "per class (same validation and test). Models whose names match no rule are left out (listed by "
            "prepare).",
            "  class table (first matching rule wins):", *("    " + ln for ln in sh3f.class_table_text().splitlines()),
        ]
        lines += self._attributions()
        return "\n".join(lines)

    def _attributions(self) -> list[str]:
        """From the prepared cache only (``info`` never builds it)."""
        try:
            files, _ = sh3f.find_catalogues(None, download_dirs(self.cache_dir))
        except DataError as e:
            return [f"  attributions: {e}"]
        digests = {f.name: file_sha256(f) for f in files}
        got = read_cached(cache_file(digests, POINTS, self.skip_broken, self.cache_dir))
        if got is None:
            return ["  attributions: shown once prepared (bench data prepare sweethome3d)"]
        arrays, meta = got
        out = ["  attributions (models used, by catalogue; licence as the catalogue states it):"]
        for c in meta["catalogues"]:
            used = [m for m in meta["models"] if m["catalogue"] == c["file"]]
            creators: dict[str, int] = {}
            for m in used:
                creators[m["creator"] or "?"] = creators.get(m["creator"] or "?", 0) + 1
            licences = sorted({m["licence"] for m in used}) or [c["licence"]]
            out.append(f"    {c['file']} ({c['name']} {c['version']}): {len(used)} models; licence: "
                       f"{' | '.join(licences)}")
            out.append("      creators: " + ", ".join(f"{k} ({v})" for k, v in sorted(creators.items())))
        counts = np.bincount(arrays["labels"], minlength=len(meta["classes"]))
        out.append("  classes: " + ", ".join(f"{c} {n}" for c, n in zip(meta["classes"], counts, strict=True)))
        out.append(f"  left out: {len(meta['unmatched'])} unmatched models, {meta['skipped_count']} skipped as "
                   "broken")
        return out
