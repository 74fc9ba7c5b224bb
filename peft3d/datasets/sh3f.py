"""Sweet Home 3D furniture catalogues (``.sh3f``): where they are, what they hold, and the class table.

A ``.sh3f`` file is a zip archive. ``PluginFurnitureCatalog.properties`` at its top level is a Java
``.properties`` file (ISO-8859-1, ``\\uXXXX`` escapes) with a catalogue header (``id``, ``name``, ``version``,
``license``, ``provider``) and, for each model N = 1, 2, ..., keys ``id#N``, ``name#N`` (English),
``category#N``, ``model#N`` (path of the OBJ inside the zip, with a leading ``/``), ``creator#N``,
``doorOrWindow#N``, optionally ``license#N`` (overrides the catalogue's) and ``modelRotation#N`` (a row-major
3x3 matrix that turns the OBJ upright). Localised ``PluginFurnitureCatalog_xx.properties`` files are ignored.

Torch-free (``bench data check``/``info`` import it).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from peft3d.core.errors import DataError

PROPERTIES = "PluginFurnitureCatalog.properties"
DEB_PACKAGE = "sweethome3d-furniture"
INSTALLED = Path("/usr/share/sweethome3d/furniture")  # where Debian's package puts the catalogues
IN_DEB = Path("usr/share/sweethome3d/furniture")


@dataclass(frozen=True)
class Model:
    catalogue: str  # catalogue file name, e.g. "Scopia.sh3f"
    index: int  # N in the properties keys
    id: str
    name: str
    category: str
    obj: str  # path inside the zip, without the leading "/"
    creator: str
    licence: str
    door_or_window: bool
    rotation: tuple[float, ...] | None  # 9 values, row-major, or None


@dataclass(frozen=True)
class Catalogue:
    path: Path
    id: str
    name: str
    version: str
    licence: str
    models: tuple[Model, ...]


def parse_properties(text: str) -> dict[str, str]:
    """A Java ``.properties`` file -> dict. Hand-written: the standard library has no reader for this format and
    the few rules used by these catalogues fit in a dozen lines (comments ``#``/``!``, ``=``/``:`` separators,
    backslash line continuations, ``\\uXXXX`` and ``\\t``-style escapes)."""
    out: dict[str, str] = {}
    logical, buf = [], ""
    for raw in text.splitlines():
        line = raw.lstrip()
        if not buf and (not line or line[0] in "#!"):
            continue
        if (len(line) - len(line.rstrip("\\"))) % 2 == 1:  # an odd number of trailing backslashes continues
            buf += line[:-1]
            continue
        logical.append(buf + line)
        buf = ""
    if buf:
        logical.append(buf)
    for line in logical:
        m = re.match(r"((?:\\.|[^=:\s\\])*)\s*[=:\s]\s*(.*)$", line)
        if m:
            out[_unescape(m[1])] = _unescape(m[2])
    return out


def _unescape(s: str) -> str:
    s = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), s)
    return re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(m[1], m[1]), s)


def read_catalogue(path: Path) -> Catalogue:
    """Header and model entries of one ``.sh3f``; a missing, unreadable or malformed file is one DataError."""
    try:
        with zipfile.ZipFile(path) as z:
            text = z.read(PROPERTIES).decode("latin-1")
    except FileNotFoundError:
        raise DataError(f"sweethome3d: catalogue {path} does not exist") from None
    except KeyError:
        raise DataError(f"sweethome3d: {path} has no {PROPERTIES} (not a Sweet Home 3D furniture catalogue)") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise DataError(f"sweethome3d: {path} is not a readable zip archive ({e}); reinstall "
                        f"{DEB_PACKAGE} or pass --skip-broken to leave it out") from None
    p = parse_properties(text)
    models, n = [], 1
    while f"id#{n}" in p:
        models.append(_model(path.name, n, p))
        n += 1
    return Catalogue(path, p.get("id", path.stem), p.get("name", path.stem), p.get("version", "?"),
                     p.get("license", ""), tuple(models))


def _model(cat: str, n: int, p: dict[str, str]) -> Model:
    rot = p.get(f"modelRotation#{n}")
    rotation = tuple(float(x) for x in rot.split()) if rot else None
    if rotation is not None and len(rotation) != 9:
        raise DataError(f"sweethome3d: {cat}: modelRotation#{n} has {len(rotation)} values, expected 9")
    return Model(cat, n, p[f"id#{n}"], p.get(f"name#{n}", ""), p.get(f"category#{n}", ""),
                 p.get(f"model#{n}", "").lstrip("/"), p.get(f"creator#{n}", ""),
                 p.get(f"license#{n}", p.get("license", "")), p.get(f"doorOrWindow#{n}") == "true", rotation)


# -- where the catalogues are ------------------------------------------------------------------------------

def catalogue_files(root: Path) -> list[Path]:
    """``*.sh3f`` in ``root`` or in an extracted package tree under it (``root/usr/share/sweethome3d/furniture``)."""
    for d in (root, root / IN_DEB):
        found = sorted(d.glob("*.sh3f")) if d.is_dir() else []
        if found:
            return found
    return []


def find_catalogues(root: str | None, download_dirs: Sequence[Path] = ()) -> tuple[list[Path], str]:
    """(catalogue files, where they came from). ``root`` wins; else the installed Debian package; else a copy
    extracted earlier by :func:`download` into the first of ``download_dirs`` that holds one."""
    if root:
        r = Path(root).expanduser()
        files = catalogue_files(r)
        if not files:
            raise DataError(f"sweethome3d: no .sh3f catalogue in {r} (nor in {r / IN_DEB}); fix: point --root at "
                            f"the folder holding them, or install the Debian package {DEB_PACKAGE}")
        return files, str(r)
    if files := catalogue_files(INSTALLED):
        return files, f"Debian package {DEB_PACKAGE} ({INSTALLED})"
    for d in download_dirs:
        if files := catalogue_files(d):
            return files, f"{DEB_PACKAGE} .deb extracted in {d}"
    looked = ", ".join(str(p) for p in (INSTALLED, *download_dirs))
    raise DataError(f"sweethome3d: furniture catalogues not found (looked in {looked}); fix: apt-get install "
                    f"{DEB_PACKAGE}, or run `bench data prepare sweethome3d` (downloads the .deb with apt-get "
                    f"download, no root needed), or pass --root DIR with the .sh3f files")


def download(dest: Path) -> Path:
    """``apt-get download`` the package and ``dpkg-deb -x`` it into ``dest`` (neither needs root)."""
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise DataError(f"sweethome3d: {tool} not found, so {DEB_PACKAGE} cannot be downloaded; fix: get the "
                            f".sh3f catalogues from sweethome3d.com and pass --root DIR")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        r = subprocess.run(["apt-get", "download", DEB_PACKAGE], cwd=tmp, capture_output=True, text=True)
        debs = sorted(Path(tmp).glob("*.deb"))
        if r.returncode != 0 or not debs:
            msg = (r.stderr.strip().splitlines() or ["no .deb written"])[-1]
            raise DataError(f"sweethome3d: apt-get download {DEB_PACKAGE} failed ({msg}); fix: apt-get update, "
                            f"or pass --root DIR with the .sh3f catalogues")
        r = subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(dest)], capture_output=True, text=True)
        if r.returncode != 0:
            raise DataError(f"sweethome3d: dpkg-deb -x {debs[0].name} failed: {r.stderr.strip()[:200]}")
    return dest


# -- class table -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """A model belongs to ``cls`` when its English name matches ``names`` (whole words, case-insensitive) or its
    category is in ``categories``, its name does not match ``exclude``, and (if set) its door-or-window flag
    equals ``door_or_window``. Rules are tried in order; the first that matches wins."""

    cls: str
    names: str = ""
    categories: tuple[str, ...] = ()
    exclude: str = ""
    door_or_window: bool | None = None

    def matches(self, m: Model) -> bool:
        name = m.name.lower()
        hit = bool(self.names and re.search(rf"\b(?:{self.names})\b", name)) or m.category in self.categories
        if not hit or (self.exclude and re.search(rf"\b(?:{self.exclude})\b", name)):
            return False
        return self.door_or_window is None or m.door_or_window == self.door_or_window


# ModelNet-like classes from the catalogues' English names (and, for vehicles, their category). Order matters:
# specific rules come first ("sink cabinet" is a sink, "seat leon" a car, "toilet paper" nothing). Desks are
# tables, storage furniture of every kind is "cabinet", toilets and sinks are kept apart as in ModelNet.
# Table v2 adds six classes whose names say what the object is, each with >= 8 models in package 1.8-1 (a class
# needs 5 to appear in every fold of a 5-fold split, and a few more to be learnable): wall fittings (plugs,
# sockets, switches), bottles, cups and glasses, stoves and ovens, clothing, animals. Names that would need a
# guess (a "Box", a "Tool", "Little bank") or groups under 8 models (radiators, benches, bathtubs, vases, TVs,
# shoes) stay out; `bench data prepare sweethome3d` lists every model left out.
CLASS_RULES: tuple[Rule, ...] = (
    Rule("vehicle", categories=("Vehicles",), exclude="stroller|skateboard"),
    Rule("outlet", names="plugs?|sockets?|switch(?:es)?", exclude="artwork"),
    Rule("bottle", names="bottles?|flacon"),
    Rule("cup", names="cups?|mugs?|glass", exclude="cake|plate|table|door|window"),
    Rule("stove", names="oven|stove|cooker|cooktop|microwave", exclude="hood"),
    Rule("clothing", names="dress|jacket|shorts?|skirt|suit|trousers|clothes",
         exclude="basket|rack|hanger|horse|washing"),
    Rule("animal", names="dog|bulldog|cat|horse|rabbit|chicken|deer", exclude="rocking|house|roasted|hot|clothes"),
    Rule("person", names="male|female|girl|boy|man|woman|mannequin", exclude="shoes?|doll"),
    Rule("toilet", names="toilets?|toilets unit|urinal|bidet|lavatory|potty",
         exclude="toilet paper|toilet brush|paper|brush"),
    Rule("sink", names="sink|washbasin|basin|vanity"),
    Rule("door", names="doors?", door_or_window=True),
    Rule("window", names="windows?", door_or_window=True),
    Rule("lamp", names="lamps?|lights?|chandelier|lantern|lamppost", exclude="artwork|switch"),
    Rule("plant", names="plants?|trees?|palm|ficus|bamboo|yucca|cactus|bush|hedge|flowers|tulips|orchids|lily|"
                        "bonsai|pine|cypress|poplar|maple|acacia|beech|spathiphyllum|blossom"),
    Rule("sofa", names="sofa|couch|futon couch"),
    Rule("bed", names="beds?|crib|futon|mattress", exclude="bedside|sleeping"),
    Rule("chair", names="chairs?|armchair|stool|seat", exclude="wheelchair|toilet"),
    Rule("table", names="tables?|desk", exclude="tennis|fan|pool|football|bedside"),
    Rule("cabinet", names="cabinet|wardrobe|cupboard|drawers|dresser|bookcase|shelves|chest|locker|"
                          "bedside table", exclude="freezer"),
)
CLASSES = sorted({r.cls for r in CLASS_RULES})


def classify(m: Model) -> str | None:
    for rule in CLASS_RULES:
        if rule.matches(m):
            return rule.cls
    return None


def class_table_text() -> str:
    """The table in words (``bench data info``) — also what the dataset identity hashes."""
    lines = []
    for r in CLASS_RULES:
        parts = [f"names ~ {r.names}"] if r.names else []
        parts += [f"category in {list(r.categories)}"] if r.categories else []
        parts += [f"not {r.exclude}"] if r.exclude else []
        parts += [f"doorOrWindow={str(r.door_or_window).lower()}"] if r.door_or_window is not None else []
        lines.append(f"{r.cls:8s} {'; '.join(parts)}")
    return "\n".join(lines)
