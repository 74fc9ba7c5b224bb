"""Contact sheet of the SweetHome3D classes: a few point clouds per class, rendered so a reader can check that
the class table's labels (peft3d/datasets/sh3f.py CLASS_RULES) match the shapes. Writes
docs/img/sweethome3d_contact_sheet.png.

    PYTHONPATH=. python benchmarks/contact_sheet.py [--per-class 4] [--out docs/img/sweethome3d_contact_sheet.png]

The models shown per class are a seeded draw (the same sheet on every machine with the same catalogues); each
panel is titled with the model's catalogue name, the name the class rule matched.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SEED = 0
POINTS_SHOWN = 1024


def _draw(per_class: int) -> tuple[list[str], list[list[tuple[np.ndarray, str]]]]:
    from peft3d.datasets.sweethome3d import SweetHome3D

    arrays, meta, _ = SweetHome3D().prepared(None)
    pts, y, names = arrays["points"], arrays["labels"], [m["name"] for m in meta["models"]]
    rng = np.random.default_rng(SEED)
    rows = []
    for c in range(len(meta["classes"])):
        idx = rng.permutation(np.flatnonzero(y == c))[:per_class]
        rows.append([(pts[i][rng.permutation(len(pts[i]))[:POINTS_SHOWN]], names[i]) for i in idx])
    return list(meta["classes"]), rows


def render(per_class: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes, rows = _draw(per_class)
    fig = plt.figure(figsize=(1.9 * per_class + 1.2, 1.75 * len(classes)), dpi=72)
    for r, (cls, row) in enumerate(zip(classes, rows, strict=True)):
        for c, (p, name) in enumerate(row):
            ax = fig.add_subplot(len(classes), per_class, r * per_class + c + 1, projection="3d")
            # the clouds are stored upright with y up (Sweet Home 3D's OBJ convention): plot y as the vertical
            ax.scatter(p[:, 0], p[:, 2], p[:, 1], s=0.6, c=p[:, 1], cmap="viridis", linewidths=0)
            ax.set_box_aspect((1, 1, 1))
            ax.view_init(elev=20, azim=-60)
            ax.set_axis_off()
            ax.set_title(name[:22], fontsize=7, pad=-4)
            if c == 0:
                ax.text2D(-0.12, 0.5, cls, transform=ax.transAxes, rotation=90, va="center", ha="center",
                          fontsize=10, fontweight="bold")
    fig.subplots_adjust(left=0.04, right=0.99, top=0.995, bottom=0.005, wspace=0.0, hspace=0.12)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(json.dumps({"wrote": str(out), "classes": len(classes), "per_class": per_class}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("docs/img/sweethome3d_contact_sheet.png"))
    a = ap.parse_args()
    render(a.per_class, a.out)


if __name__ == "__main__":
    main()
