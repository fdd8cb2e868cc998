"""Plots of runs: mask composition per layer and training curves.

Data preparation (`composition_data`, `curve_data`, `mean_layers`,
`pareto_front`) is separate from the drawing; the figure functions
(`plot_mask_composition`, `plot_training_curves`, `plot_accuracy_curves`,
`plot_accuracy_vs_remaining`, `plot_layer_utilisation`, `plot_trials`) draw
with matplotlib's object-oriented API (`matplotlib.figure.Figure`), so no
pyplot state or display is involved. `plot_run` writes a run's two figures
(of an unfinished run, the mask of its last checkpoint); the command is
`ssm_keras.cli.plots`.
"""

import contextlib
import dataclasses
import io
import math
import os

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ssm_keras import files, paper
from ssm_keras.errors import UserError
from ssm_keras.settings import setting
from ssm_keras.training import run_dir

COMPOSITION_FILE = "mask_composition.png"
CURVES_FILE = "training_curves.png"
KINDS = ("kept", "inverted", "hidden")
COLORS = {"kept": "#2b8a3e", "inverted": "#c92a2a", "hidden": "#ced4da"}
DPI = 120


class PlotError(UserError):
    """A run directory that cannot be plotted; the message says why."""


# Reading a run.
def load_run(model_dir, results=None):
    """`(results, history)` of a finished run: `results.json` (read unless
    given as `results`) and the list of `history.jsonl` records (one per
    epoch).

    Raises:
        RunDirError: not a finished, readable run (`run_dir.read_results`).
        PlotError: `results.json` has no per-layer statistics.
    """
    if results is None:
        results = run_dir.read_results(model_dir)
    if not isinstance(results.get("layers"), list):
        raise PlotError(f"{os.path.join(model_dir, run_dir.RESULTS)} has no per-layer "
                        "statistics ('layers').")
    return results, run_dir.read_history(model_dir)


def load_unfinished_run(model_dir):
    """`(flags, history, status, started_after)` of a run that has not
    finished: its `flags.json`, its epoch records, `"diverged"` (from the
    `history.jsonl` it wrote as it stopped) or `"unfinished"` (still
    training or killed: from its last checkpoint), and the epoch of the
    checkpoint it started from (`started_after`), or None.

    Raises:
        RunDirError: a damaged file.
        PlotError: no epoch has finished yet.
    """
    flags = run_dir.read_json(os.path.join(model_dir, run_dir.FLAGS_JSON))
    results_path = os.path.join(model_dir, run_dir.RESULTS)
    if os.path.isfile(results_path):  # not finished, so diverged
        record = run_dir.read_json(results_path)
        status, history = "diverged", run_dir.read_history(model_dir)
    else:
        # The curves need the state alone, not the model file (`checkpoint_mask_layers`).
        record = run_dir.read_state(model_dir, verify_model=False) or {}
        status, history = "unfinished", record.get("history", [])
    if not history:
        how = "diverged in its first epoch" if status == "diverged" else (
            "has not finished an epoch yet")
        raise PlotError(f"the run in {model_dir} {how}; nothing to plot")
    return flags, history, status, started_after(record)


def _read_twice(read):
    """`read()`, called again once if it raised `RunDirError`: a run that
    trains on replaces its checkpoint (a new model file, then `state.json`,
    then the old model file deleted) while it may be being read."""
    try:
        return read()
    except run_dir.RunDirError:
        return read()


def checkpoint_mask_layers(model_dir, flags):
    """`(layers, epoch, averaged)` of the last checkpoint of the run in
    `model_dir` (whose `flags.json` holds `flags`), or None if it has none:
    the checkpoint's per-layer mask records (`statistics.summarize`), its
    epoch, and whether they are the mask of the averaged scores (with
    `--ema_momentum` in the `mask` regime, from the epoch the average
    started: the mask the validation evaluated). The model is loaded under
    the run's `--mixed_precision` policy, with which its optimiser, and so
    its averages, were saved.

    Raises:
        RunDirError: a damaged checkpoint.
        PlotError: a checkpoint whose averages did not load.
    """
    # Imported here: they import TensorFlow, which this module does not at its top.
    from ssm_keras.training import averaging, statistics, trainer

    def load():
        found = run_dir.read_checkpoint(run_dir.checkpoint_dir(model_dir),
                                        advice="ssm-plots only reads it.")
        if found is None:
            return None
        state, path = found
        averaged = (flags.get("regime", "mask") == "mask"
                    and "averaged_remaining_percent" in state["history"][-1])
        with trainer.global_dtype_policy(flags.get("mixed_precision") or "float32"):
            model = trainer.load_model_file(path, "the checkpoint", compile=averaged)
        return model, state["epoch"], averaged

    loaded = _read_twice(load)
    if loaded is None:
        return None
    model, epoch, averaged = loaded
    if averaged and not (averaging.averages(model.optimizer)
                         and int(model.optimizer.iterations.numpy()) > 0):
        raise PlotError(f"the checkpoint of {model_dir} after epoch {epoch} was loaded without "
                        "its optimiser's state, so its averaged scores are missing.")
    with averaging.averaged_variables(model) if averaged else contextlib.nullcontext():
        layers = statistics.summarize(model)["layers"]
    return layers, epoch, averaged


def started_after(record):
    """The epoch of the checkpoint a `--start_from` run started from, by its
    `results.json` or checkpoint state (`record`); None for other runs."""
    return (record.get("started_from") or {}).get("epoch")


# Data preparation.
def composition_data(layers):
    """Per-layer percentages of kept, inverted and hidden weights.

    Args:
        layers: `results["layers"]` records (name, total, `kept_fraction`,
            `inverted_fraction`, `hidden_fraction`).

    Returns:
        `{"names", "totals", "kept", "inverted", "hidden", "remaining"}`,
        lists in layer order; percentages are `100 * fraction`, and
        `remaining = kept + inverted`.
    """
    data = {"names": [record["name"] for record in layers],
            "totals": [record["total"] for record in layers]}
    for kind in KINDS:
        data[kind] = [100.0 * record[f"{kind}_fraction"] for record in layers]
    data["remaining"] = [kept + inverted for kept, inverted in zip(data["kept"], data["inverted"])]
    return data


def mean_layers(layer_lists):
    """Layer records whose fractions are the means over several runs of one
    experiment (same layers in the same order)."""
    names = [[record["name"] for record in layers] for layers in layer_lists]
    if any(other != names[0] for other in names):
        raise PlotError("the runs of one experiment have different layers; cannot average them.")
    averaged = []
    for records in zip(*layer_lists):
        averaged.append({
            "name": records[0]["name"],
            "total": records[0]["total"],
            **{f"{kind}_fraction": sum(r[f"{kind}_fraction"] for r in records) / len(records)
               for kind in KINDS},
        })
    return averaged


def pareto_front(points):
    """The points no other point beats on both axes: fewer remaining weights
    and higher accuracy. Sorted by `remaining_percent`.

    Args:
        points: dicts with `remaining_percent` and `accuracy`.
    """
    front = []
    for point in sorted(points, key=lambda p: (p["remaining_percent"], -p["accuracy"])):
        if not front or point["accuracy"] > front[-1]["accuracy"]:
            front.append(point)
    return front


CURVE_KEYS = ("accuracy", "val_accuracy", "loss", "val_loss", "remaining_percent",
              "target_remaining_percent", "averaged_remaining_percent", "mask_flips",
              "learning_rate")


PERCENT_KEYS = ("accuracy", "val_accuracy")

# Curves that may start later than epoch 1: `--ema_momentum` in a run
# started from a checkpoint without it (`forking`).
LATER_KEYS = ("averaged_remaining_percent",)


def curve_data(history):
    """`{"epoch": [...], key: [...]}` for each of `CURVE_KEYS` that every
    epoch record of `history` has (`LATER_KEYS`: some, NaN for the others);
    accuracies in % (`100 * accuracy`)."""
    data = {"epoch": [record["epoch"] for record in history]}
    for key in CURVE_KEYS:
        found = [key in record for record in history]
        if history and (all(found) or (key in LATER_KEYS and any(found))):
            scale = 100.0 if key in PERCENT_KEYS else 1.0
            data[key] = [scale * float(record.get(key, math.nan)) for record in history]
    return data


# Figures.
def _save(figure, path):
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    image = io.BytesIO()
    figure.savefig(image, dpi=DPI, format=os.path.splitext(path)[1][1:] or "png")
    files.write_atomically(path, image.getvalue())
    return path


def plot_mask_composition(layers, path, title=None):
    """Stacked bars per layer: kept, inverted, hidden (left, 0-100%) and the
    remaining weights alone (right, zoomed). Returns `path`."""
    data = composition_data(layers)
    count = len(data["names"])
    labels = [f"{name} ({total:,})" for name, total in zip(data["names"], data["totals"])]
    figure = Figure(figsize=(11, 1.2 + 0.45 * count), layout="constrained")
    full, zoom = figure.subplots(1, 2, sharey=True, width_ratios=(3, 2))
    rows = list(range(count))
    left = [0.0] * count
    for kind in KINDS:
        full.barh(rows, data[kind], left=left, color=COLORS[kind], label=kind)
        left = [start + width for start, width in zip(left, data[kind])]
    full.set_xlim(0, 100)
    full.set_xlabel("% of the layer's weights")
    full.set_yticks(rows, labels)
    full.invert_yaxis()
    full.set_title("composition")
    zoom.barh(rows, data["kept"], color=COLORS["kept"], label="kept")
    zoom.barh(rows, data["inverted"], left=data["kept"], color=COLORS["inverted"],
              label="inverted")
    widest = max(data["remaining"], default=0.0) or 1.0
    for row, remaining in zip(rows, data["remaining"]):
        zoom.text(remaining + 0.01 * widest, row, f"{remaining:.2f}%", va="center",
                  fontsize="small")
    zoom.set_xlim(0, 1.2 * widest)
    zoom.set_xlabel("% of the layer's weights (remaining only)")
    zoom.set_title("remaining = kept + inverted")
    figure.legend(*full.get_legend_handles_labels(), loc="outside lower center", ncols=3,
                  fontsize="small")
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def _spans_a_decade(values):
    """Whether the positive `values` span a factor of 10 or more."""
    positive = [value for value in values if value > 0]
    return bool(positive) and max(positive) >= 10 * min(positive)


def flips_scale(flips):
    """The mask-flips axis: `symlog` when the positive counts span a decade
    or more (so it has a labelled power of ten), else `linear`."""
    return "symlog" if _spans_a_decade(flips) else "linear"


def remaining_scale(percents):
    """The remaining-weights axis: `log` when every percentage drawn on it
    (NaN, an epoch without the value, aside) is above 0 and they span a
    decade or more, so that the last few percent stay readable and a
    geometric target path is a straight line; else `linear` (where a mask
    that lost every weight shows its 0)."""
    drawn = [value for value in percents if not math.isnan(value)]
    return "log" if drawn and min(drawn) > 0 and _spans_a_decade(drawn) else "linear"


def _set_log_percent_axis(axes, percents):
    """A log y axis labelled with plain numbers (`50`, `0.5`, `0.00002`): at
    1, 2 and 5 times the powers of ten over at most three decades of
    `percents`, at the powers of ten over more."""
    positive = [value for value in percents if value > 0]
    few_decades = max(positive) <= 1000 * min(positive)
    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if few_decades else (1.0,)))
    axes.yaxis.set_major_formatter(FuncFormatter(
        lambda value, _: np.format_float_positional(value, precision=3, fractional=False,
                                                    trim="-")))
    axes.yaxis.set_minor_formatter(NullFormatter())


def plot_training_curves(history, path, title=None, paper_figure=None, started_after=None):
    """Writes `training_curves_figure` to `path`. Returns `path`."""
    return _save(training_curves_figure(history, title, paper_figure, started_after), path)


def training_curves_figure(history, title=None, paper_figure=None, started_after=None):
    """Accuracy, loss, remaining weights (%) and mask flips per epoch, in a
    2 x 2 grid; a run with `--target_remaining` also draws its target path
    (dashed) beside the remaining weights, `paper_figure` (a
    `paper.PaperFigure`) is drawn as the paper's final test accuracy and
    remaining weights (dotted), and `started_after` (the epoch `N` of the
    checkpoint a `--start_from` run started from) as a vertical line at
    `N + 0.5` in every panel: the epochs left of it are the parent's. With
    `--ema_momentum` the remaining weights of the averaged mask, which the
    validation evaluates from the epoch they are recorded, are drawn beside
    those of the trained one. The remaining weights' axis is logarithmic
    where they span a decade (`remaining_scale`), the flips' where the
    counts do (`flips_scale`)."""
    data = curve_data(history)
    epochs = data["epoch"]
    figure = Figure(figsize=(10, 7), layout="constrained")
    (accuracy, loss), (remaining, flips) = figure.subplots(2, 2, sharex=True)
    paper_style = {"linestyle": ":", "color": "C3"}
    if paper_figure:
        accuracy.axhline(paper_figure.test_accuracy, **paper_style,
                         label=f"paper, test: {paper_figure.test_accuracy:.2f}%")
    paper_remaining = (paper_figure.remaining_percent
                       if paper_figure and "remaining_percent" in data else None)
    if paper_remaining is not None:
        remaining.axhline(paper_remaining, **paper_style, label=f"paper: {paper_remaining:.2f}%")
    # The mask's line is named when another line shares its panel.
    mask_label = ("mask" if "target_remaining_percent" in data
                  or "averaged_remaining_percent" in data or remaining.get_lines() else None)
    measured = {"marker": "o", "markersize": 3}
    path_style = {"linestyle": "--", "color": "0.4"}
    validation = "validation"
    averaged = [epoch for epoch, value in zip(epochs, data.get("averaged_remaining_percent", []))
                if not math.isnan(value)]
    if averaged:
        validation += f" (averaged mask from epoch {averaged[0]})"
    remaining_series = (("remaining_percent", mask_label, measured),
                        ("averaged_remaining_percent", "averaged mask (evaluated)", measured),
                        ("target_remaining_percent", "target path", path_style))
    panels = (
        (accuracy, "accuracy (%)", (("accuracy", "training", measured),
                                    ("val_accuracy", validation, measured))),
        (loss, "loss", (("loss", "training", measured), ("val_loss", validation, measured))),
        (remaining, "remaining weights (%)", remaining_series),
        (flips, "mask flips per epoch", (("mask_flips", None, measured),)),
    )
    for axes, ylabel, series in panels:
        if started_after is not None:
            axes.axvline(started_after + 0.5, linestyle="-.", color="0.6",
                         label=f"started from epoch {started_after}"
                         if axes is accuracy else None)
        for key, label, style in series:
            if key in data:
                axes.plot(epochs, data[key], label=label, **style)
        axes.set_ylabel(ylabel)
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:  # a labelled line was drawn
            axes.legend(fontsize="small")
    drawn_percents = [value for key, _, _ in remaining_series for value in data.get(key, [])]
    if remaining_scale(drawn_percents + [paper_remaining or math.nan]) == "log":
        _set_log_percent_axis(remaining, drawn_percents)
    if flips_scale(data.get("mask_flips", [])) == "symlog":
        flips.set_yscale("symlog", linthresh=1)  # logarithmic, but 0 flips still show
        flips.set_ylim(bottom=0)  # counts: the autoscaled margin reached -1,000
    for axes in (remaining, flips):
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        figure.suptitle(title)
    return figure


def plot_accuracy_curves(curves, path, title=None, ylabel="validation accuracy (%)"):
    """One line per curve on shared axes. Returns `path`.

    Args:
        curves: dicts with `label`, `epochs`, `values` and optionally `std`
            (drawn as a band of plus or minus one standard deviation).
    """
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.subplots()
    for curve in curves:
        line, = axes.plot(curve["epochs"], curve["values"], marker="o", markersize=3,
                          label=curve["label"])
        if curve.get("std"):
            low = [value - std for value, std in zip(curve["values"], curve["std"])]
            high = [value + std for value, std in zip(curve["values"], curve["std"])]
            axes.fill_between(curve["epochs"], low, high, color=line.get_color(), alpha=0.2)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    if title:
        axes.set_title(title)
    return _save(figure, path)


def plot_layer_utilisation(series, path, title=None):
    """Per masked layer, the percentage of its weights kept against its
    number of weights (log scale). Returns `path`.

    Args:
        series: dicts with `label`, `totals` (each layer's number of weights)
            and `kept_percent` (`100 * remaining / total` of that layer).
    """
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.subplots()
    for index, entry in enumerate(series):
        axes.plot(entry["totals"], entry["kept_percent"], "osD^v"[index % 5],
                  markersize=9 - 2 * (index % 3), markerfacecolor="none", markeredgewidth=1.5,
                  label=entry["label"])
    axes.set_xscale("log")
    axes.set_xlabel("weights in the layer")
    axes.set_ylabel("weights kept (%)")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize="small")
    if title:
        axes.set_title(title)
    return _save(figure, path)


def plot_accuracy_vs_remaining(points, path, title=None):
    """Test accuracy against remaining weights (log scale). Returns `path`.

    Args:
        points: dicts with `label`, `remaining_percent`, `accuracy` (both in
            %), optional `remaining_std` and `accuracy_std` (error bars) and
            `paper` (True: drawn hollow, as the paper's reference).
    """
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    axes = figure.subplots()
    colors = {}
    for point in points:
        color = colors.setdefault(point["label"], f"C{len(colors) % 10}")
        paper = point.get("paper", False)
        axes.errorbar(
            point["remaining_percent"], point["accuracy"],
            xerr=point.get("remaining_std"), yerr=point.get("accuracy_std"),
            fmt="s" if paper else "o", markersize=7, color=color,
            markerfacecolor="none" if paper else color, capsize=3,
            label=None if paper else point["label"],
        )
    if any(point.get("paper") for point in points):
        axes.plot([], [], "s", color="grey", markerfacecolor="none", label="paper")
    axes.set_xscale("log")
    axes.set_xlabel("remaining weights (%)")
    axes.set_ylabel("test accuracy (%)")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize="small", ncols=2)
    if title:
        axes.set_title(title)
    return _save(figure, path)


def plot_trials(points, path, title=None, best=None):
    """Accuracy against remaining weights (log scale) of every trial of a
    search, the Pareto front (`pareto_front`) joined by a line. Returns `path`.

    Args:
        points: dicts with `label` (the trial id), `remaining_percent` and
            `accuracy` (both in %).
        best: the label of the best trial, ringed.
    """
    figure = Figure(figsize=(8, 5.5), layout="constrained")
    axes = figure.subplots()
    axes.plot([p["remaining_percent"] for p in points], [p["accuracy"] for p in points],
              "o", color="C0", alpha=0.6, label="trial")
    front = pareto_front(points)
    axes.plot([p["remaining_percent"] for p in front], [p["accuracy"] for p in front],
              "-", color="C1", drawstyle="steps-post", label="Pareto front")
    for point in front:
        axes.annotate(point["label"], (point["remaining_percent"], point["accuracy"]),
                      textcoords="offset points", xytext=(4, 4), fontsize="x-small")
    for point in points:
        if point["label"] == best:
            axes.plot(point["remaining_percent"], point["accuracy"], "o", markersize=13,
                      markerfacecolor="none", color="C3", label=f"best trial ({best})")
    axes.set_xscale("log")
    remaining = [p["remaining_percent"] for p in points]
    if max(remaining) < 10 * min(remaining):  # within a decade: label the minor ticks plainly
        axes.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.set_xlabel("remaining weights (%)")
    axes.set_ylabel("validation accuracy (%)")
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize="small")
    if title:
        axes.set_title(title)
    return _save(figure, path)


def run_title(results):
    """`arch regime on dataset: test accuracy, remaining weights`."""
    regime = results.get("regime")
    what = {"weights": "baseline", "mask_then_weights": "mask then weights"}.get(
        regime, f"{results.get('mask')} supermask")
    accuracy = results.get("test_accuracy")
    text = f"{results.get('arch', '?')} {what} on {results.get('dataset', '?')}"
    if accuracy is not None:
        text += f": test accuracy {100 * accuracy:.2f}%"
    if results.get("remaining_percent") is not None:
        text += f", {results['remaining_percent']:.2f}% of the weights remain"
    return text


def unfinished_title(flags, history, status):
    """`arch regime on dataset: epoch E of N, <status>`."""
    last = history[-1]["epoch"]
    return f"{run_title(flags)}: epoch {last} of {flags.get('epochs', '?')}, {status}"


def checkpoint_title(flags, epoch, averaged, status):
    """`arch regime on dataset: checkpoint after epoch E of N [(averaged
    scores)], <status>`."""
    what = " (averaged scores)" if averaged else ""
    return (f"{run_title(flags)}: checkpoint after epoch {epoch} of "
            f"{flags.get('epochs', '?')}{what}, {status}")


@dataclasses.dataclass
class PlotSettings:
    """The settings of `ssm-plots`: which run, and where its plots go."""

    model_dir: str | None = setting(
        None, "Required: training run directory (finished, or with at least one epoch).")
    out_dir: str | None = setting(None, "Folder of the plots (default: --model_dir).")


def plot(settings):
    """`plot_run` of `settings` (`PlotSettings`); `PlotError` without a run."""
    if not settings.model_dir:
        raise PlotError("give --model_dir, the run to plot")
    return plot_run(settings.model_dir, settings.out_dir)


def _plot_unfinished_run(model_dir, out_dir, flags, history, status, start):
    """`plot_run` of a run that has not finished: its training curves so
    far, then the mask composition of its last checkpoint, if it has one
    (a checkpoint that cannot be read leaves the curves written)."""
    curves = plot_training_curves(history, os.path.join(out_dir, CURVES_FILE),
                                  unfinished_title(flags, history, status),
                                  paper.figure_of_run(flags), start)
    try:
        checkpoint = checkpoint_mask_layers(model_dir, flags)
    except (run_dir.RunDirError, PlotError) as error:
        raise PlotError(f"wrote {curves}, but no mask composition: {error}") from None
    if checkpoint is None:
        return [curves]
    layers, epoch, averaged = checkpoint
    return [curves, plot_mask_composition(layers, os.path.join(out_dir, COMPOSITION_FILE),
                                          checkpoint_title(flags, epoch, averaged, status))]


def plot_run(model_dir, out_dir=None, run=None):
    """Writes `mask_composition.png` and `training_curves.png` of a finished
    run into `out_dir` (default `model_dir`); of a run that has not finished
    (still training, killed or diverged), `training_curves.png` of its
    epochs so far and the mask composition of its last checkpoint (none
    without one). Returns the paths written. `run` is a finished run's
    `(results, history)` if already read (`load_run`).

    Raises:
        RunDirError, PlotError: `model_dir` holds no run with a finished
            epoch (`load_run`, `load_unfinished_run`) or a damaged
            checkpoint, or `out_dir` cannot be written or is another run's
            folder.
    """
    finished = run[0] if run else run_dir.finished_results(model_dir)
    unfinished = finished is None and os.path.isfile(os.path.join(model_dir, run_dir.FLAGS_JSON))
    if unfinished:
        flags, history, status, start = load_unfinished_run(model_dir)
    else:
        results, history = run or load_run(model_dir, finished)
        start = started_after(results)
    out_dir = out_dir or model_dir
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise PlotError(f"{out_dir} is a file; name a folder for the plots")
    if (os.path.isfile(os.path.join(out_dir, run_dir.FLAGS_JSON))
            and os.path.realpath(out_dir) != os.path.realpath(model_dir)):
        raise PlotError(f"{out_dir} is another training run's folder, whose own plots these "
                        f"would replace; name another folder for the plots of {model_dir}")
    try:
        if unfinished:
            return _plot_unfinished_run(model_dir, out_dir, flags, history, status, start)
        title = run_title(results)
        paths = [plot_mask_composition(results["layers"],
                                       os.path.join(out_dir, COMPOSITION_FILE), title)]
        if history:
            paths.append(plot_training_curves(history, os.path.join(out_dir, CURVES_FILE),
                                              title,
                                              paper.figure_of_run(results.get("flags", {})),
                                              start))
    except OSError as error:
        raise PlotError(f"cannot write the plots into {out_dir}: {error.strerror} "
                        f"({error.filename})") from None
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        # Hand-edited or foreign files: a record without a key, or of another type.
        raise PlotError(
            f"the results.json or history.jsonl of {model_dir} lacks a value or holds one of "
            f"the wrong type ({type(error).__name__}: {error}); were they written by "
            "ssm_keras.train?"
        ) from None
    return paths
