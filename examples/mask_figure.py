"""Draws the README's picture of a signed supermask: docs/images/signed_supermask.png.

    python examples/mask_figure.py [--out=docs/images/signed_supermask.png]

Four 6x6 matrices of one layer, left to right: the frozen random weights
`W0 = c * sign(N(0, 1))` (signed constant), the trained scores `s` with the
threshold `tau` marked, the signed mask `m(s) = sign(s) * [|s| > tau]` and the
effective kernel `W = W0 * m(s)` the layer computes with. The numbers are drawn
from a fixed NumPy seed; they illustrate the formulas, they are not a trained
model. Needs only NumPy and Matplotlib.
"""

import argparse
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SIZE = 6
TAU = 0.6
TERNARY = mcolors.ListedColormap(["#c0392b", "#f2f2f2", "#2e86c1"])  # -1, 0, +1


def matrices(seed=0):
    """`W0`, `s`, `m(s)` and `W` for a `SIZE x SIZE` layer with `c = 1`."""
    rng = np.random.default_rng(seed)
    initial = np.sign(rng.normal(size=(SIZE, SIZE)))
    scores = rng.normal(scale=0.8, size=(SIZE, SIZE))
    mask = np.sign(scores) * (np.abs(scores) > TAU)
    return initial, scores, mask, initial * mask


def draw(out):
    initial, scores, mask, kernel = matrices()
    figure, axes = plt.subplots(1, 4, figsize=(8.4, 2.5))
    panels = [
        (initial, "frozen weights $W_0 = \\pm c$", "PuOr", (-1.6, 1.6), "{:+.0f}"),
        (scores, f"scores $s$ (grey: $|s| \\leq \\tau = {TAU}$)", "RdBu", (-2, 2), "{:+.2f}"),
        (mask, "mask $m(s) \\in \\{-1, 0, +1\\}$", TERNARY, (-1, 1), "{:+.0f}"),
        (kernel, "layer computes $W = W_0 \\cdot m(s)$", "PuOr", (-1.6, 1.6), "{:+.0f}"),
    ]
    for axis, (values, title, cmap, (low, high), text) in zip(axes, panels):
        axis.imshow(values, cmap=cmap, vmin=low, vmax=high)
        for (row, column), value in np.ndenumerate(values):
            label = "0" if value == 0 else text.format(value)
            if "W_0" in title:
                label = label.replace("1", "c")
            hidden = cmap == "RdBu" and abs(value) <= TAU
            axis.text(column, row, label, ha="center", va="center", fontsize=5.5,
                      color="#777777" if hidden else "black")
        axis.set_title(title, fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])
    for axis, symbol in zip(axes[:3], ["", "$\\to$", "$\\to$"]):
        axis.annotate(symbol, (1.08, 0.5), xycoords="axes fraction", ha="center", fontsize=9)
    figure.text(0.5, 0.02, "mask: blue keeps a weight (+1), grey hides it (0), red inverts it (-1)",
                ha="center", fontsize=8)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path,
                        default=pathlib.Path(__file__).resolve().parents[1]
                        / "docs" / "images" / "signed_supermask.png")
    draw(parser.parse_args().out)


if __name__ == "__main__":
    main()
