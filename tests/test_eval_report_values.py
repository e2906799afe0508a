"""Results folder, value by value: the per-class figure's artists, the summary table's exact
lines, the JSON/CSV formatting and the class-name checks of every writer."""

import json
import math
import struct

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.markers import MarkerStyle
from omegaconf import OmegaConf

from solo_multiview.eval.metrics import long_tail_report
from solo_multiview.eval.report import (
    plot_per_class,
    summary_table,
    to_jsonable,
    write_per_class_csv,
    write_results,
    write_results_json,
)

NAN = float("nan")
BLUE, ORANGE, RED = (to_rgba(c) for c in ("tab:blue", "tab:orange", "tab:red"))
GREY, BLACK = to_rgba("grey"), to_rgba("black")

# Six classes; head to tail by count (ties by id): 1 (300), 3 (150), 5 (100), 0 (50), 4 (50),
# 2 (3); thirds: many {1, 3}, medium {5, 0}, few {4, 2}; class 2 has no test image.
COUNTS6 = [50, 300, 3, 150, 50, 100]
ORDER6 = [1, 3, 5, 0, 4, 2]
ACC6 = [55.0, 10.0, NAN, 25.0, 95.0, 40.0]


def plot_report(counts, acc, thirds_acc=None, rules=("thirds",)):
    """The keys ``plot_per_class`` reads, written out by hand."""
    groups = {r: {} for r in rules}
    if "thirds" in groups and thirds_acc is not None:
        groups["thirds"]["acc"] = thirds_acc
    return {"num_classes": len(counts), "train_counts": list(counts),
            "per_class_acc": list(acc), "groups": groups}


def report6():
    return plot_report(COUNTS6, ACC6, {"many": 17.5, "medium": 47.5, "few": 95.0})


def draw(monkeypatch, tmp_path, report, class_names=None, render=False):
    """Runs ``plot_per_class`` and returns the figure it saved (and the written path); unless
    ``render``, the PNG itself is not drawn (the artists are all there before that)."""
    saved = []
    real_savefig = Figure.savefig

    def spy(fig, *args, **kwargs):
        saved.append(fig)
        if render:
            real_savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    path = plot_per_class(tmp_path / "per_class.png", report, class_names)
    assert len(saved) == 1
    return saved[0], path


def axes_of(fig):
    ax, ax2 = fig.axes
    return ax, ax2


def bars(ax):
    return list(ax.containers[0])


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# --------------------------------------------------------------------------- bars


def test_bars_heights_head_to_tail_missing_as_zero(monkeypatch, tmp_path):
    ax, _ = axes_of(draw(monkeypatch, tmp_path, report6())[0])
    b = bars(ax)
    assert [r.get_x() + r.get_width() / 2 for r in b] == pytest.approx(list(range(6)))
    expected = [0.0 if math.isnan(ACC6[c]) else ACC6[c] for c in ORDER6]
    assert expected == [10.0, 25.0, 40.0, 55.0, 95.0, 0.0]
    assert [r.get_height() for r in b] == pytest.approx(expected)


def test_bars_coloured_by_thirds_group(monkeypatch, tmp_path):
    ax, _ = axes_of(draw(monkeypatch, tmp_path, report6())[0])
    assert [r.get_facecolor() for r in bars(ax)] == [BLUE, BLUE, ORANGE, ORANGE, RED, RED]


def test_none_accuracy_is_a_missing_class(monkeypatch, tmp_path):
    # a report read back from JSON has None (not NaN) for a class without test images
    report = plot_report([0, 1, 5], [None, 50.0, 75.0], {"many": 75.0, "medium": 50.0,
                                                         "few": NAN})
    ax, _ = axes_of(draw(monkeypatch, tmp_path, report)[0])
    assert [r.get_height() for r in bars(ax)] == pytest.approx([75.0, 50.0, 0.0])
    (markers,) = ax.collections
    assert markers.get_offsets().tolist() == [[2.0, 0.0]]


def test_bar_width_below_and_from_200_classes(monkeypatch, tmp_path):
    ax, _ = axes_of(draw(monkeypatch, tmp_path, report6())[0])
    assert {r.get_width() for r in bars(ax)} == {0.85}
    counts = list(range(200, 0, -1))
    ax, _ = axes_of(draw(monkeypatch, tmp_path, plot_report(counts, [50.0] * 200))[0])
    assert {r.get_width() for r in bars(ax)} == {1.0}


# --------------------------------------------------------------------------- missing markers


def test_missing_classes_marked_with_grey_x_at_zero(monkeypatch, tmp_path):
    ax, _ = axes_of(draw(monkeypatch, tmp_path, report6())[0])
    (markers,) = ax.collections
    assert markers.get_offsets().tolist() == [[5.0, 0.0]]  # class 2, last head to tail
    style = MarkerStyle("x")
    expected_path = style.get_path().transformed(style.get_transform())
    np.testing.assert_allclose(markers.get_paths()[0].vertices, expected_path.vertices)
    assert [tuple(c) for c in markers.get_edgecolor()] == [GREY]
    assert markers.get_label() == "no test images"
    assert markers.get_zorder() > max(r.get_zorder() for r in bars(ax))


def test_missing_marker_legend_upper_right(monkeypatch, tmp_path):
    fig, _ = draw(monkeypatch, tmp_path, report6(), render=True)
    ax, _ = axes_of(fig)
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["no test images"]
    renderer = fig.canvas.get_renderer()
    box, frame = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
    # the tallest bar stands at the right, so "best" would not put it there
    assert frame.x1 - 20 < box.x1 <= frame.x1 and frame.y1 - 20 < box.y1 <= frame.y1
    assert box.x0 > (frame.x0 + frame.x1) / 2 and box.y0 > (frame.y0 + frame.y1) / 2


def test_no_markers_or_legend_when_every_class_has_test_images(monkeypatch, tmp_path):
    report = plot_report([3, 2, 1], [10.0, 20.0, 30.0], {"many": 10.0, "medium": 20.0,
                                                         "few": 30.0})
    ax, _ = axes_of(draw(monkeypatch, tmp_path, report)[0])
    assert len(ax.collections) == 0 and ax.get_legend() is None


# --------------------------------------------------------------------------- axes


def test_axis_limits_and_labels(monkeypatch, tmp_path):
    ax, ax2 = axes_of(draw(monkeypatch, tmp_path, report6())[0])
    assert ax.get_ylim() == (0.0, 105.0)
    assert ax.get_xlim() == (-0.5, 5.5)
    assert ax.get_ylabel() == "accuracy (%)"
    assert ax.get_xlabel() == "classes, head to tail (training frequency)"
    assert ax2.get_ylabel() == "training images (log)"


def test_tick_labels_are_class_ids_head_to_tail(monkeypatch, tmp_path):
    ax, _ = axes_of(draw(monkeypatch, tmp_path, report6())[0])
    assert list(ax.get_xticks()) == list(range(6))
    labels = ax.get_xticklabels()
    assert [t.get_text() for t in labels] == [str(c) for c in ORDER6]
    assert {t.get_rotation() for t in labels} == {0.0}


def test_tick_labels_are_class_names_rotated(monkeypatch, tmp_path):
    names = ["ant", "bee", "cat", "dog", "eel", "fox"]
    ax, _ = axes_of(draw(monkeypatch, tmp_path, report6(), names)[0])
    labels = ax.get_xticklabels()
    assert [t.get_text() for t in labels] == [names[c] for c in ORDER6]
    assert {t.get_rotation() for t in labels} == {90.0}


def test_tick_labels_up_to_40_classes_only(monkeypatch, tmp_path):
    counts = list(range(100, 60, -1))  # 40 classes, already head to tail
    ax, _ = axes_of(draw(monkeypatch, tmp_path, plot_report(counts, [50.0] * 40))[0])
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(c) for c in range(40)]
    counts = list(range(100, 59, -1))  # 41 classes: matplotlib's own ticks
    ax, _ = axes_of(draw(monkeypatch, tmp_path, plot_report(counts, [50.0] * 41))[0])
    assert list(ax.get_xticks()) != list(range(41))
    assert len(ax.get_xticks()) < 41


def test_write_results_passes_class_names_to_the_plot(monkeypatch, tmp_path):
    names = ["ant", "bee", "cat", "dog", "eel", "fox"]
    report = long_tail_report(torch.eye(6), torch.arange(6), COUNTS6)
    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *args, **kwargs: saved.append(fig))
    write_results(tmp_path, report, class_names=names)
    (fig,) = saved
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [names[c] for c in ORDER6]


# --------------------------------------------------------------------------- count line


def test_count_line_on_log_axis(monkeypatch, tmp_path):
    _, ax2 = axes_of(draw(monkeypatch, tmp_path, report6())[0])
    assert ax2.get_yscale() == "log"
    (line,) = ax2.get_lines()
    assert list(line.get_xdata()) == list(range(6))
    assert list(line.get_ydata()) == [COUNTS6[c] for c in ORDER6] == [300, 150, 100, 50, 50, 3]
    assert to_rgba(line.get_color()) == BLACK
    assert line.get_marker() == "."
    assert line.get_markersize() > 0


def test_count_line_skips_classes_without_training_images(monkeypatch, tmp_path):
    report = plot_report([0, 1, 5], [10.0, 20.0, 30.0], {"many": 30.0, "medium": 20.0,
                                                         "few": 10.0})
    _, ax2 = axes_of(draw(monkeypatch, tmp_path, report)[0])
    (line,) = ax2.get_lines()
    assert list(line.get_xdata()) == [0, 1]  # class 2 (5 images), class 1 (1 image)
    assert list(line.get_ydata()) == [5, 1]


def test_count_line_markers_hidden_above_200_classes(monkeypatch, tmp_path):
    counts = list(range(1000, 800, -1))
    _, ax2 = axes_of(draw(monkeypatch, tmp_path, plot_report(counts, [50.0] * 200))[0])
    assert ax2.get_lines()[0].get_markersize() > 0
    counts = list(range(1000, 799, -1))
    _, ax2 = axes_of(draw(monkeypatch, tmp_path, plot_report(counts, [50.0] * 201))[0])
    assert ax2.get_lines()[0].get_markersize() == 0


# --------------------------------------------------------------------------- thirds


def vlines(ax):
    return list(ax.get_lines())  # axvline's; the count line is on the twin axis


def test_dashed_grey_lines_at_thirds_boundaries(monkeypatch, tmp_path):
    ax, _ = axes_of(draw(monkeypatch, tmp_path, report6())[0])
    lines = vlines(ax)
    assert [list(v.get_xdata()) for v in lines] == [[1.5, 1.5], [3.5, 3.5]]
    assert {to_rgba(v.get_color()) for v in lines} == {GREY}
    assert {v.get_linestyle() for v in lines} == {"--"}


def test_boundary_lines_three_and_two_classes(monkeypatch, tmp_path):
    report = plot_report([3, 2, 1], [10.0, 20.0, 30.0], {"many": 10.0, "medium": 20.0,
                                                         "few": 30.0})
    ax, _ = axes_of(draw(monkeypatch, tmp_path, report)[0])
    assert [list(v.get_xdata()) for v in vlines(ax)] == [[0.5, 0.5], [1.5, 1.5]]
    # two classes: groups 1 / 1 / 0, so only the many | medium boundary is drawn
    report = plot_report([2, 1], [10.0, 20.0], {"many": 10.0, "medium": 20.0, "few": NAN})
    ax, _ = axes_of(draw(monkeypatch, tmp_path, report)[0])
    assert [list(v.get_xdata()) for v in vlines(ax)] == [[0.5, 0.5]]


def texts(ax):
    return [(t.get_text(), t.get_position(), t.get_ha(), t.get_va()) for t in ax.texts]


def test_group_texts_centred_above_each_third(monkeypatch, tmp_path):
    ax, _ = axes_of(draw(monkeypatch, tmp_path, report6())[0])
    # groups span ranks 0-1, 2-3, 4-5: centres 0.5, 2.5, 4.5
    assert texts(ax) == [("Many 17.5", (0.5, 101), "center", "bottom"),
                         ("Medium 47.5", (2.5, 101), "center", "bottom"),
                         ("Few 95.0", (4.5, 101), "center", "bottom")]


def test_group_text_without_value_for_nan_and_empty_groups(monkeypatch, tmp_path):
    report = plot_report([2, 1], [12.34, NAN], {"many": 12.34, "medium": NAN, "few": NAN})
    ax, _ = axes_of(draw(monkeypatch, tmp_path, report)[0])
    assert texts(ax) == [("Many 12.3", (0.0, 101), "center", "bottom"),
                         ("Medium", (1.0, 101), "center", "bottom")]


def test_group_texts_without_thirds_accuracies(monkeypatch, tmp_path):
    expected = [("Many", (0.0, 101), "center", "bottom"),
                ("Medium", (1.0, 101), "center", "bottom"),
                ("Few", (2.0, 101), "center", "bottom")]
    counts, acc = [3, 2, 1], [10.0, 20.0, 30.0]
    no_thirds = plot_report(counts, acc, rules=("thresholds",))
    ax, _ = axes_of(draw(monkeypatch, tmp_path, no_thirds)[0])
    assert texts(ax) == expected
    thirds_without_acc = plot_report(counts, acc)
    assert thirds_without_acc["groups"] == {"thirds": {}}
    ax, _ = axes_of(draw(monkeypatch, tmp_path, thirds_without_acc)[0])
    assert texts(ax) == expected


# --------------------------------------------------------------------------- figure and file


def test_figure_size_dpi_and_png_independent_of_rcparams(monkeypatch, tmp_path):
    rc = {"figure.figsize": (3.0, 2.0), "figure.dpi": 50, "savefig.format": "svg"}
    with matplotlib.rc_context(rc):
        fig, path = draw(monkeypatch, tmp_path, report6(), render=True)
    assert tuple(fig.get_size_inches()) == (6.0, 4.0)  # width max(6, 0.12 * 6)
    assert fig.dpi == 100
    assert isinstance(fig.canvas, FigureCanvasAgg)
    assert png_size(path) == (600, 400)


@pytest.mark.parametrize("C,width", [(40, 6.0), (100, 12.0), (200, 20.0)])
def test_figure_width_grows_with_classes_up_to_20_inches(monkeypatch, tmp_path, C, width):
    counts = list(range(2 * C, C, -1))
    fig, _ = draw(monkeypatch, tmp_path, plot_report(counts, [50.0] * C))
    assert tuple(fig.get_size_inches()) == pytest.approx((width, 4.0))


def test_plot_checks_class_names(tmp_path):
    with pytest.raises(ValueError) as err:
        plot_per_class(tmp_path / "p.png", report6(), class_names=list("abcdefg"))
    assert str(err.value) == "class_names: expected 6 names, got 7"
    assert not (tmp_path / "p.png").exists()


# --------------------------------------------------------------------------- JSON and CSV


def test_to_jsonable_resolves_omegaconf():
    cfg = OmegaConf.create({"b": 2, "a": "${b}", "l": [1, "${b}"], "d": {"x": "${b}"}})
    assert to_jsonable(cfg) == {"b": 2, "a": 2, "l": [1, 2], "d": {"x": 2}}
    assert to_jsonable(OmegaConf.create([1, "${0}"])) == [1, 1]


def test_to_jsonable_falls_back_to_repr():
    assert to_jsonable(1 + 2j) == "(1+2j)"
    assert to_jsonable({"f": {1, 2} - {1, 2}, "z": 3j}) == {"f": [], "z": "3j"}


def minimal_report(num_classes=3):
    return {"num_classes": num_classes, "top1": 50.0, "per_class_acc": [50.0, NAN, 25.0],
            "train_counts": [3, 2, 1], "test_counts": [2, 0, 4],
            "groups": {"thirds": {"group_of_class": [0, 1, 2]}}}


def test_results_json_is_indented_by_two(tmp_path):
    path = write_results_json(tmp_path / "r.json", minimal_report(), {"k": 1}, ["a", "b", "c"])
    text = path.read_text()
    data = json.loads(text)
    assert data["per_class_acc"] == [50.0, None, 25.0]
    assert text == json.dumps(data, indent=2)
    assert text.splitlines()[1] == '  "num_classes": 3,'


def test_results_json_checks_class_names(tmp_path):
    with pytest.raises(ValueError) as err:
        write_results_json(tmp_path / "r.json", minimal_report(), None, ["a", "b", "c", "d"])
    assert str(err.value) == "class_names: expected 3 names, got 4"
    assert not (tmp_path / "r.json").exists()


def test_csv_lines_end_with_newline_only(tmp_path):
    path = write_per_class_csv(tmp_path / "c.csv", minimal_report())
    assert path.read_bytes() == (b"class_id,class_name,train_count,test_count,accuracy,"
                                 b"group_thirds\n"
                                 b"0,,3,2,50.0,many\n"
                                 b"1,,2,0,,medium\n"
                                 b"2,,1,4,25.0,few\n")


def test_csv_checks_class_names(tmp_path):
    with pytest.raises(ValueError) as err:
        write_per_class_csv(tmp_path / "c.csv", minimal_report(), ["a", "b", "c", "d"])
    assert str(err.value) == "class_names: expected 3 names, got 4"
    assert not (tmp_path / "c.csv").exists()


def test_write_results_checks_names_before_creating_the_folder(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError) as err:
        write_results(out, minimal_report(), class_names=["a"])
    assert str(err.value) == "class_names: expected 3 names, got 1"
    assert not out.exists()


def test_write_results_creates_nested_folders(tmp_path):
    out = tmp_path / "a" / "b" / "c"
    paths = write_results(out, minimal_report(), plot=False)
    assert paths == {"json": out / "results.json", "csv": out / "per_class.csv"}
    assert sorted(p.name for p in out.iterdir()) == ["per_class.csv", "results.json"]


# --------------------------------------------------------------------------- summary table


def table_report():
    return {
        "num_samples": 1234, "num_classes": 10, "top1": 71.256, "top5": 90.5,
        "balanced_acc": 65.125,
        "groups": {
            "thirds": {"sizes": {"many": 4, "medium": 3, "few": 3},
                       "acc": {"many": 80.0, "medium": 62.5, "few": 41.004},
                       "std": 15.75, "params": {}},
            "thresholds": {"sizes": {"many": 2, "medium": 5, "few": 3},
                           "acc": {"many": NAN, "medium": 55.555, "few": 7.0},
                           "std": NAN, "params": {"many_above": 100, "few_below": 20}},
        },
    }


def test_summary_table_exact_lines():
    lines = summary_table(table_report(), title="knn k=20").split("\n")
    assert lines == [
        "knn k=20",
        "1234 test images, 10 classes",
        " " * 12 + "   top1    top5  balanced",
        "overall" + " " * 5 + "  71.26   90.50     65.12",  # 65.125 is 65.12499.. in binary
        "rule" + " " * 8 + "   many  medium     few     std   classes m/m/f",
        "thirds" + " " * 6 + "  80.00   62.50   41.00   15.75   4/3/3",
        "thresholds" + " " * 2 + "      -   55.55    7.00       -   2/5/3"
        "  (>100, 20..100, <20)",
    ]
    assert f"{65.125:.2f}" == "65.12" and f"{55.555:.2f}" == "55.55"


def test_summary_table_missing_values_right_aligned():
    r = table_report()
    r.update(top1=None, top5=None, balanced_acc=NAN)
    lines = summary_table(r).split("\n")
    assert lines[0] == "1234 test images, 10 classes"
    assert lines[2] == "overall" + " " * 5 + "      -       -         -"


def test_summary_table_threshold_note_only_with_params():
    r = table_report()
    r["groups"]["thresholds"]["params"] = {}
    r["groups"]["thirds"]["params"] = {"many_above": 1, "few_below": 0}
    lines = summary_table(r).split("\n")
    assert lines[-2] == "thirds" + " " * 6 + "  80.00   62.50   41.00   15.75   4/3/3"
    assert lines[-1] == "thresholds" + " " * 2 + "      -   55.55    7.00       -   2/5/3"
