"""Results folder: contents, strict JSON, PNG, and atomic replacement."""

import csv
import json
import math
import os

import numpy as np
import pytest
import torch

from solo_multiview.eval.metrics import long_tail_report
from solo_multiview.eval.report import (
    atomic_write,
    summary_table,
    write_per_class_csv,
    write_results,
)

COUNTS = [300, 150, 100, 50, 25, 3]


def make_report():
    targets = torch.tensor([0, 0, 1, 2, 2, 4, 4, 5])  # class 3 has no test image
    preds = torch.tensor([0, 1, 1, 2, 0, 4, 5, 0])
    scores = torch.nn.functional.one_hot(preds, 6).float()
    return long_tail_report(scores, targets, COUNTS)


def no_nan(name):
    raise AssertionError(f"non-strict JSON constant {name}")


def test_writes_json_csv_png(tmp_path):
    r = make_report()
    names = ["a", "b", "c", "d", "e", "f"]
    settings = {"k": 200, "T": np.float32(0.5), "path": tmp_path, "nested": {"t": torch.tensor(2)}}
    paths = write_results(tmp_path / "out", r, settings, class_names=names)
    assert sorted(os.listdir(tmp_path / "out")) == ["per_class.csv", "per_class.png",
                                                    "results.json"]

    data = json.loads(paths["json"].read_text(), parse_constant=no_nan)
    assert data["top1"] == pytest.approx(r["top1"])
    assert data["per_class_acc"][3] is None  # NaN written as null
    assert data["per_class_acc"][0] == pytest.approx(50.0)
    assert data["groups"]["thirds"]["acc"] == pytest.approx(r["groups"]["thirds"]["acc"])
    assert data["settings"] == {"k": 200, "T": 0.5, "path": str(tmp_path), "nested": {"t": 2}}
    assert data["class_names"] == names

    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert rows[3] == {"class_id": "3", "class_name": "d", "train_count": "50",
                       "test_count": "0", "accuracy": "", "group_thirds": "medium",
                       "group_thresholds": "medium"}
    assert float(rows[4]["accuracy"]) == pytest.approx(50.0)
    assert rows[5]["group_thirds"] == "few" and rows[5]["group_thresholds"] == "few"

    png = paths["png"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_many_classes_without_names(tmp_path):
    g = torch.Generator().manual_seed(0)
    C = 100
    counts = (500 * 0.01 ** (np.arange(C) / (C - 1))).astype(int)
    targets = torch.arange(C).repeat(3)[: 3 * C - 7]
    scores = torch.randn(len(targets), C, generator=g)
    paths = write_results(tmp_path, long_tail_report(scores, targets, counts), None)
    assert paths["png"].stat().st_size > 1000
    with open(paths["csv"]) as f:
        assert all(row["class_name"] == "" for row in csv.DictReader(f))


def test_failure_mid_write_keeps_previous_file(tmp_path):
    target = tmp_path / "x.txt"
    atomic_write(target, lambda f: f.write("good\n"))

    def half_then_fail(f):
        f.write("partial")
        f.flush()
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "good\n"
    assert os.listdir(tmp_path) == ["x.txt"]  # no temporary file left behind


def test_csv_failure_mid_rows_keeps_previous_csv(tmp_path):
    r = make_report()
    path = write_per_class_csv(tmp_path / "per_class.csv", r)
    before = path.read_bytes()

    class BrokenNames(list):
        def __getitem__(self, i):
            if i == 4:
                raise KeyError("name lookup failed")
            return super().__getitem__(i)

    with pytest.raises(KeyError):
        write_per_class_csv(path, r, class_names=BrokenNames("abcdef"))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["per_class.csv"]


def test_written_file_permissions_follow_umask(tmp_path):
    path = atomic_write(tmp_path / "p.txt", lambda f: f.write("x"))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_summary_table():
    r = make_report()
    text = summary_table(r, title="linear")
    lines = text.splitlines()
    assert lines[0] == "linear" and len(lines) <= 10
    overall = next(line for line in lines if line.startswith("overall"))
    assert f"{r['top1']:.2f}" in overall and f"{r['balanced_acc']:.2f}" in overall
    thirds = next(line for line in lines if line.startswith("thirds"))
    for name in ("many", "medium", "few"):
        assert f"{r['groups']['thirds']['acc'][name]:.2f}" in thirds
    assert f"{r['groups']['thirds']['std']:.2f}" in thirds and "2/2/2" in thirds
    thresholds = next(line for line in lines if line.startswith("thresholds"))
    assert "2/3/1" in thresholds

    small = long_tail_report(torch.eye(3), torch.arange(3), [3, 2, 1])
    overall = next(line for line in summary_table(small).splitlines() if "overall" in line)
    assert overall.split()[2] == "-"  # top5 not reported for C < 5
    assert math.isnan(small["groups"]["thresholds"]["acc"]["many"])


def test_class_names_length_checked(tmp_path):
    with pytest.raises(ValueError, match="class_names"):
        write_results(tmp_path, make_report(), class_names=["a"])
