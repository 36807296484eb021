import math

import numpy as np
import pandas as pd
import pytest

from lenet_lib.summary import report
from lenet_lib.analysis import stats
from lenet_lib.analysis.results import file_checksums, make_manifest, save_results
from lenet_lib.base.files import write_json

MEASURE_DEFAULTS = dict(train_loss=0.1, train_acc=0.9, val_loss=0.1, val_acc=0.9, test_loss=0.1,
                        epoch_seconds=1.0, status="ok", dataset="mnist", conv_dropout=0.0)


def frame(notebook, rows):
    return pd.DataFrame([{**MEASURE_DEFAULTS, "notebook": notebook, "run_id": "r", **r} for r in rows])


def grid(bn_first_epoch_gain, final_spread=0.0, plain_seconds=1.0, seeds=range(4)):
    """bn_dropout_grid rows: 4 variants x seeds x 2 epochs with controlled effects."""
    rows, rng = [], np.random.default_rng(0)
    for bn in (False, True):
        for p in (0.0, 0.5):
            for seed in seeds:
                for epoch in (1, 2):
                    acc = 0.9 + (bn_first_epoch_gain if bn and epoch == 1 else 0) - (0.05 if epoch == 1 else 0)
                    acc += (final_spread if (bn and p) else 0) + rng.normal(0, 0.002)
                    seconds = plain_seconds if not bn and not p else 1.5
                    rows.append(dict(model_id=f"{bn}-{p}-{seed}", seed=seed, epoch=epoch, bn=bn, dropout=p,
                                     test_acc=acc, train_seconds=seconds + rng.normal(0, 0.01)))
    return frame("bn_dropout_grid", rows)


def test_t_interval_and_holm_known_values():
    lo, hi = stats.t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)     # t(0.975, 2) * s / sqrt(n)
    assert lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert all(math.isnan(v) for v in stats.t_interval([1.0]))
    np.testing.assert_allclose(stats.holm(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])


def test_compare_to_best_finds_best_and_ties():
    df = pd.DataFrame({"g": ["a"] * 4 + ["b"] * 4 + ["c"] * 4,
                       "v": [0.90, 0.91, 0.92, 0.91, 0.905, 0.915, 0.91, 0.90, 0.5, 0.51, 0.52, 0.5]})
    table = stats.compare_to_best(df, "g", "v").set_index("g")
    assert table.index[0] == "a" and table.loc["a", "tied_with_best"]
    assert table.loc["b", "tied_with_best"] and not table.loc["c", "tied_with_best"]
    assert stats.anova(df, "g", "v") < 0.001


def test_report_reads_runs_back(tmp_path):
    runs = []
    for i, (status, df) in enumerate([("ok", grid(0.03)), ("failed", None)]):
        run_dir = tmp_path / "runs" / "bn_dropout_grid" / f"r{i}"
        if df is not None:
            save_results(df.drop(columns=["notebook", "run_id"]), run_dir, "bn_dropout_grid", f"r{i}")
        write_json(make_manifest({}, status, "t0", "t1", 1.0, error=None if df is not None else "boom",
                                 files=file_checksums(run_dir)), run_dir / "manifest.json")
        runs.append({"notebook": "bn_dropout_grid", "run_id": f"r{i}", "run_dir": str(run_dir),
                     "status": status})
    lost = tmp_path / "runs" / "bn_dropout_grid" / "r9"
    runs.append({"notebook": "bn_dropout_grid", "run_id": "r9", "run_dir": str(lost), "status": "missing",
                 "error": "worker lost"})
    runs.append({"notebook": "bn_dropout_grid", "run_id": "r8", "run_dir": str(tmp_path / "runs" / "r8"),
                 "status": "skipped", "preset": "R3", "error": "needs CIFAR-10"})      # never started: no manifest
    write_json({"profile": "quick", "runs": runs}, tmp_path / "index.json")
    index, results, table = report.load_index(tmp_path / "index.json")
    assert index["profile"] == "quick" and len(results) == 32
    trouble = report.problems(table).set_index("run_id")
    assert trouble.loc["r1", "status"] == "failed" and trouble.loc["r9", "error"] == "worker lost"
    assert tuple(trouble.loc["r8", ["preset", "status", "error"]]) == ("R3", "skipped", "needs CIFAR-10")
    (notebook, protocol, dataset, rows), = list(report.notebook_sections(results))
    assert (notebook, protocol, dataset) == ("bn_dropout_grid", "", "mnist")
    assert set(report.varying_columns(rows)) >= {"bn", "dropout"}
    overview = report.overview(rows)
    assert len(overview) == 4 and set(overview.columns) >= {"config", "n", "test_acc", "val_acc"}
    assert (overview["n"] == 4).all()
    # a protocol without a validation split (R1's preset): the section has no val_acc column at all
    (*_, test_only), = list(report.notebook_sections(results.assign(val_acc=float("nan"))))
    assert "val_acc" not in test_only
    overview = report.overview(test_only)
    assert len(overview) == 4 and "val_acc" not in overview and (overview["n"] == 4).all()
    # every model diverged (no finite validation loss): the figure says so instead of failing the summary
    from lenet_lib.analysis import plots
    (*_, blown_up), = list(report.notebook_sections(results.assign(val_loss=float("inf"))))
    figure = plots.overview(blown_up)
    assert [t.get_text() for t in figure.axes[0].texts] == ["no finite validation loss"]
    assert figure.axes[1].get_ylabel() == "validation accuracy"
