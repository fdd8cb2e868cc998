"""Plots of a run: the data behind the figures, the figures, the `plots` command."""

import math
import os
import shutil

import numpy as np
import pytest
from absl import flags
from support import crashed_run, tiny_config, tiny_splits

from ssm_keras import paper, plotting
from ssm_keras.cli import plots, shell
from ssm_keras.training import run_dir, trainer


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("plots")
    trainer.run(tiny_config(tmp_path, epochs=2), splits=tiny_splits())
    return tmp_path / "run"


@pytest.mark.slow
def test_plot_run_writes_both_figures(finished_run, tmp_path, monkeypatch):
    drawn = []
    figure_of = plotting.training_curves_figure
    monkeypatch.setattr(plotting, "training_curves_figure",
                        lambda *args: drawn.append(args[2]) or figure_of(*args))
    paths = plotting.plot_run(str(finished_run), str(tmp_path / "out"))
    assert drawn == [paper.PaperFigure(97.48, 3.77)]  # the FCN's signed supermask on MNIST
    assert [os.path.basename(path) for path in paths] == [plotting.COMPOSITION_FILE,
                                                          plotting.CURVES_FILE]
    for path in paths:
        with open(path, "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(path) > 20_000


@pytest.mark.parametrize("flips, scale", [
    ([132189, 60095, 43281], "linear"),  # within a decade: a log axis would have no label
    ([20000, 900, 894], "symlog"), ([0, 5, 50], "symlog"), ([0, 0], "linear"), ([], "linear"),
])
@pytest.mark.slow
def test_mask_flips_axis_is_logarithmic_only_over_a_decade(flips, scale, tmp_path):
    assert plotting.flips_scale(flips) == scale
    history = [{"epoch": e + 1, "mask_flips": f, "accuracy": 0.5} for e, f in enumerate(flips)]
    figure = plotting.training_curves_figure(history)
    flips_axes = figure.axes[3]
    assert (flips_axes.get_ylabel(), flips_axes.get_yscale()) == ("mask flips per epoch", scale)
    if scale == "symlog":  # no negative counts on the axis
        assert flips_axes.get_ylim()[0] == 0
    figure_path = plotting.plot_training_curves(history, str(tmp_path / "curves.png"))
    assert os.path.getsize(figure_path) > 0


def test_pareto_front_keeps_trials_no_other_beats_on_both_axes(tmp_path):
    points = [{"label": label, "remaining_percent": remaining, "accuracy": accuracy}
              for label, remaining, accuracy in [
                  ("a", 2.0, 97.0), ("b", 1.0, 96.0), ("c", 3.0, 96.5), ("d", 2.5, 97.4),
                  ("e", 1.0, 95.0), ("f", 4.0, 97.4)]]
    assert [p["label"] for p in plotting.pareto_front(points)] == ["b", "a", "d"]
    path = plotting.plot_trials(points, str(tmp_path / "trials.png"), "search", best="d")
    assert os.path.getsize(path) > 10_000


@pytest.mark.slow
def test_plot_data_of_a_real_run(finished_run):
    results, history = plotting.load_run(str(finished_run))
    data = plotting.composition_data(results["layers"])
    assert data["names"] == ["dense_1", "dense_2", "dense_3"]  # one bar per layer
    for index, record in enumerate(results["layers"]):
        parts = [data[kind][index] for kind in plotting.KINDS]
        assert sum(parts) == pytest.approx(100.0)
        assert data["remaining"][index] == pytest.approx(100 * record["remaining"] / record["total"])
        assert 0 < data["inverted"][index] < data["remaining"][index] < 100
    curves = plotting.curve_data(history)
    assert curves["epoch"] == [1, 2]
    assert curves["val_accuracy"] == pytest.approx([100 * h["val_accuracy"] for h in history])
    assert curves["mask_flips"] == [h["mask_flips"] for h in history]
    # A run without --target_remaining and --ema_momentum has every other curve.
    assert set(plotting.CURVE_KEYS) - {"target_remaining_percent",
                                       "averaged_remaining_percent"} <= set(curves)


@pytest.mark.parametrize("flags, expected", [
    ({"arch": "conv4", "dataset": "cifar10", "regime": "mask", "mask": "signed"},
     paper.PaperFigure(77.40, 2.91)),
    ({"arch": "conv4", "dataset": "cifar10", "regime": "mask", "mask": "binary", "signed": True},
     paper.PaperFigure(77.40, 2.91)),
    ({"arch": "resnet20", "dataset": "cifar10", "width": 2, "regime": "mask", "mask": "signed"},
     paper.PaperFigure(84.42, 7.69)),
    ({"arch": "resnet20", "dataset": "cifar10", "width": 1, "regime": "weights"},
     paper.PaperFigure(84.91, None)),
    ({"arch": "conv4", "dataset": "cifar10", "regime": "mask", "mask": "signed", "signed": False},
     None),
    ({"arch": "conv4", "dataset": "cifar10", "regime": "mask_then_weights", "mask": "signed"},
     None),
    ({"arch": "conv4", "dataset": "mnist", "regime": "mask", "mask": "signed"}, None),
    ({"arch": "wrn28", "dataset": "cifar10", "regime": "weights"}, None),
])
def test_the_paper_figure_of_a_run_is_that_of_its_network_and_regime(flags, expected):
    assert paper.figure_of_run(flags) == expected


@pytest.mark.parametrize("percents, scale", [
    ([56.0, 6.6, 1.17], "log"),  # a signed supermask pruned along its path: over a decade
    ([56.0, 30.0, math.nan], "linear"),  # within a decade (NaN: an epoch without the value)
    ([56.0, 3.0, 0.0], "linear"),  # a mask that lost every weight shows its 0
    ([], "linear"),
])
def test_remaining_axis_is_logarithmic_over_a_decade_above_zero(percents, scale):
    assert plotting.remaining_scale(percents) == scale


def test_training_curves_draw_a_pruned_mask_on_a_log_axis_with_plain_labels():
    history = [{"epoch": e, "remaining_percent": 50.0 * 0.8 ** e,
                "target_remaining_percent": 50.0 * 0.8 ** e} for e in range(1, 6)]
    # 50% to 16%: within a decade, until the paper's 1.17% is drawn beside it.
    assert plotting.training_curves_figure(history).axes[2].get_yscale() == "linear"
    remaining = plotting.training_curves_figure(
        history, paper_figure=paper.PaperFigure(80.91, 1.17)).axes[2]
    assert remaining.get_yscale() == "log"
    ticks = remaining.yaxis.get_major_locator().tick_values(1.0, 50.0)
    labels = [remaining.yaxis.get_major_formatter()(tick, index)
              for index, tick in enumerate(ticks) if 1.0 <= tick <= 50.0]
    assert labels == ["1", "2", "5", "10", "20", "50"]


def _horizontal_lines(axes):
    return {line.get_label(): line.get_ydata()[0] for line in axes.get_lines()
            if len(set(line.get_ydata())) == 1 and line.get_linestyle() == ":"}


def test_training_curves_draw_the_paper_figure_beside_the_run():
    history = [{"epoch": e, "accuracy": 0.5 + e / 10, "val_accuracy": 0.5 + e / 20,
                "remaining_percent": 50.0 / e} for e in (1, 2, 3)]
    figure = plotting.training_curves_figure(history, paper_figure=paper.PaperFigure(77.4, 2.91))
    accuracy, _, remaining, _ = figure.axes
    assert _horizontal_lines(accuracy) == {"paper, test: 77.40%": 77.4}
    assert _horizontal_lines(remaining) == {"paper: 2.91%": 2.91}
    assert "mask" in remaining.get_legend_handles_labels()[1]
    baseline = plotting.training_curves_figure(history, paper_figure=paper.PaperFigure(74.5, None))
    assert _horizontal_lines(baseline.axes[0]) == {"paper, test: 74.50%": 74.5}
    assert _horizontal_lines(baseline.axes[2]) == {}
    plain = plotting.training_curves_figure(history)
    assert all(_horizontal_lines(axes) == {} for axes in plain.axes)
    assert plain.axes[2].get_legend() is None
    assert all(_vertical_lines(axes) == [] for axes in plain.axes)
    started = plotting.training_curves_figure(history, started_after=2)
    assert [_vertical_lines(axes) for axes in started.axes] == [[2.5]] * 4
    assert "started from epoch 2" in started.axes[0].get_legend_handles_labels()[1]
    assert plotting.started_after({"started_from": {"checkpoint": "run", "epoch": 2}}) == 2
    assert plotting.started_after({"status": "finished"}) is None


def test_training_curves_draw_the_averaged_mask_from_the_epoch_it_is_recorded():
    # A run started after epoch 2 with --ema_momentum: its parent's epochs have no average.
    history = [{"epoch": e, "remaining_percent": 50.0 / e,
                **({"averaged_remaining_percent": 40.0 / e} if e > 2 else {})}
               for e in (1, 2, 3, 4)]
    np.testing.assert_array_equal(plotting.curve_data(history)["averaged_remaining_percent"],
                                  [np.nan, np.nan, 40.0 / 3, 10.0])
    remaining = plotting.training_curves_figure(history, started_after=2).axes[2]
    lines = {line.get_label(): list(line.get_ydata()) for line in remaining.get_lines()}
    assert lines["mask"] == [50.0, 25.0, 50.0 / 3, 12.5]
    np.testing.assert_array_equal(lines["averaged mask (evaluated)"],
                                  [np.nan, np.nan, 40.0 / 3, 10.0])
    accuracy, loss = plotting.training_curves_figure(
        [{**record, "val_accuracy": 0.5, "val_loss": 1.0} for record in history]).axes[:2]
    for axes in (accuracy, loss):
        assert "validation (averaged mask from epoch 3)" in axes.get_legend_handles_labels()[1]
    without = [{key: value for key, value in record.items()
                if key != "averaged_remaining_percent"} for record in history]
    assert "averaged_remaining_percent" not in plotting.curve_data(without)


def _vertical_lines(axes):
    return [line.get_xdata()[0] for line in axes.get_lines()
            if len(set(line.get_xdata())) == 1]


def _plots_cli(*argv):
    flag_values = flags.FlagValues()
    plots.define_flags(flag_values)
    flag_values(["plots", *argv])
    return shell.run(lambda: plots.run_command(flag_values))


@pytest.mark.slow
def test_plots_command(finished_run, tmp_path, capsys):
    assert _plots_cli(f"--model_dir={finished_run}", f"--out_dir={tmp_path}") == 0
    assert sorted(os.listdir(tmp_path)) == [plotting.COMPOSITION_FILE, plotting.CURVES_FILE]
    capsys.readouterr()
    assert _plots_cli(f"--model_dir={tmp_path / 'missing'}") == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and "does not exist" in error[0]
    assert _plots_cli(f"--model_dir={tmp_path}") == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"{tmp_path} has no results.json" in error[0]
    a_file = tmp_path / "a_file"
    a_file.write_text("kept")
    assert _plots_cli(f"--model_dir={finished_run}", f"--out_dir={a_file}") == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"error: {a_file} is a file; name a folder for the plots"]
    assert a_file.read_text() == "kept"
    other_run = tmp_path / "other_run"
    other_run.mkdir()
    (other_run / "flags.json").write_text("{}")
    (other_run / plotting.CURVES_FILE).write_bytes(b"its own curves")
    assert _plots_cli(f"--model_dir={finished_run}", f"--out_dir={other_run}") == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"error: {other_run} is another training run's folder, whose own plots "
                     f"these would replace; name another folder for the plots of {finished_run}"]
    assert (other_run / plotting.CURVES_FILE).read_bytes() == b"its own curves"


def test_mean_layers_averages_fractions():
    layers = [[{"name": "a", "total": 10, "kept_fraction": k, "inverted_fraction": 0.1,
                "hidden_fraction": 0.9 - k}] for k in (0.1, 0.3)]
    (mean,) = plotting.mean_layers(layers)
    assert mean["kept_fraction"] == pytest.approx(0.2)
    assert mean["hidden_fraction"] == pytest.approx(0.7)
    with pytest.raises(plotting.PlotError):
        plotting.mean_layers([layers[0], [{**layers[1][0], "name": "b"}]])


@pytest.mark.slow
def test_plots_of_an_unfinished_run_with_a_target_and_averaged_scores(tmp_path, capsys):
    # The average starts with epoch 2 of 4 (ceil(0.25 * 4) = 1, from 0); under
    # mixed_float16 the averages are variables of a LossScaleOptimizer's inner one.
    config = tiny_config(tmp_path, epochs=4, target_remaining=40.0, ema_momentum=0.9,
                         ema_start=0.25, mixed_precision="mixed_float16")
    crashed_run(config, tiny_splits(), after_epoch=2)
    out = tmp_path / "out"
    assert _plots_cli(f"--model_dir={config.model_dir}", f"--out_dir={out}") == 0
    assert capsys.readouterr().out.split() == [str(out / plotting.CURVES_FILE),
                                               str(out / plotting.COMPOSITION_FILE)]
    flags, history, status, started_after = plotting.load_unfinished_run(config.model_dir)
    assert status == "unfinished" and [record["epoch"] for record in history] == [1, 2]
    assert started_after is None
    assert plotting.unfinished_title(flags, history, status) == (
        "fcn signed supermask on mnist: epoch 2 of 4, unfinished")
    curves = plotting.curve_data(history)
    assert curves["target_remaining_percent"] == [h["target_remaining_percent"] for h in history]
    assert 40.0 < curves["target_remaining_percent"][1] < curves["target_remaining_percent"][0]
    # The composition is the checkpoint's mask the validation evaluated: the averaged one.
    layers, epoch, averaged = plotting.checkpoint_mask_layers(config.model_dir, flags)
    assert (epoch, averaged) == (2, True)
    remaining = 100 * sum(layer["remaining"] for layer in layers) / sum(
        layer["total"] for layer in layers)
    assert remaining == pytest.approx(history[-1]["averaged_remaining_percent"])
    assert remaining != pytest.approx(history[-1]["remaining_percent"])
    assert plotting.checkpoint_title(flags, epoch, averaged, status) == (
        "fcn signed supermask on mnist: checkpoint after epoch 2 of 4 (averaged scores), "
        "unfinished")


@pytest.mark.slow
def test_plots_of_a_killed_run_draw_the_mask_of_its_checkpoint(tmp_path):
    config = tiny_config(tmp_path, epochs=3)
    crashed_run(config, tiny_splits(), after_epoch=1)
    flags, history, _, _ = plotting.load_unfinished_run(config.model_dir)
    layers, epoch, averaged = plotting.checkpoint_mask_layers(config.model_dir, flags)
    assert (epoch, averaged) == (1, False)
    assert sum(layer["remaining"] for layer in layers) == history[-1]["remaining_weights"]
    assert [layer["name"] for layer in layers] == ["dense_1", "dense_2", "dense_3"]
    # A damaged model file: the curves are still drawn, the composition is refused.
    checkpoint = run_dir.checkpoint_dir(config.model_dir)
    model_file = os.path.join(checkpoint, run_dir.read_json(
        os.path.join(checkpoint, "state.json"))["model"])
    with open(model_file, "ab") as file:
        file.write(b"\0")
    out = tmp_path / "out"
    with pytest.raises(plotting.PlotError, match=(
            f"^wrote {out / plotting.CURVES_FILE}, but no mask composition: .*SHA-256 differs"
            r"\). ssm-plots only reads it\.$")):
        plotting.plot_run(config.model_dir, str(out))
    assert sorted(os.listdir(out)) == [plotting.CURVES_FILE]
    shutil.rmtree(checkpoint)
    assert plotting.checkpoint_mask_layers(config.model_dir, flags) is None


def test_a_remaining_axis_over_many_decades_is_labelled_at_powers_of_ten():
    history = [{"epoch": e, "remaining_percent": 56.0 * 0.01 ** e} for e in range(4)]
    remaining = plotting.training_curves_figure(history).axes[2]
    assert remaining.get_yscale() == "log"
    ticks = remaining.yaxis.get_major_locator().tick_values(56.0 * 1e-6, 56.0)
    labels = [remaining.yaxis.get_major_formatter()(tick, index)
              for index, tick in enumerate(ticks) if 1e-5 <= tick <= 100]
    assert labels[:2] == ["0.00001", "0.0001"] and labels[-2:] == ["10", "100"]
    assert all(label.strip("0.") == "1" for label in labels)  # powers of ten only


def test_plots_of_a_run_without_a_finished_epoch(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "flags.json").write_text('{"arch": "fcn", "epochs": 3}')
    assert _plots_cli(f"--model_dir={run}") == 1
    assert capsys.readouterr().err.strip() == (
        f"error: the run in {run} has not finished an epoch yet; nothing to plot")
    assert os.listdir(run) == ["flags.json"]
    (run / "results.json").write_text('{"status": "diverged"}')  # as a run writes it
    (run / "history.jsonl").write_text("")
    assert _plots_cli(f"--model_dir={run}") == 1
    assert capsys.readouterr().err.strip() == (
        f"error: the run in {run} diverged in its first epoch; nothing to plot")
