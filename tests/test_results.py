import json
import os

import pandas as pd
import pytest

from lenet_lib.analysis.results import check_tidy, file_checksums, make_manifest, read_runs, save_results, \
    write_table
from lenet_lib.base.files import atomic_write, write_json


def tidy(n_models=2, epochs=2):
    rows = [{"model_id": f"m{m}", "seed": m, "epoch": e, "train_loss": 1.0, "train_acc": 0.5,
             "val_loss": 1.0, "val_acc": 0.5, "test_loss": 1.0, "test_acc": 0.5, "epoch_seconds": 0.1,
             "status": "ok", "lr": 0.1}
            for m in range(n_models) for e in range(1, epochs + 1)]
    return pd.DataFrame(rows)


def test_save_results_tags_checks_and_round_trips(tmp_path):
    df = save_results(tidy(), tmp_path, notebook="nb", run_id="abc")
    assert list(df.columns[:5]) == ["notebook", "run_id", "model_id", "seed", "epoch"]
    back = pd.read_parquet(tmp_path / "results.parquet")
    pd.testing.assert_frame_equal(back, df)
    write_table(df, tmp_path / "r.csv")
    assert len(pd.read_csv(tmp_path / "r.csv")) == 4
    with pytest.raises(ValueError, match="xlsx"):
        write_table(df, tmp_path / "r.xlsx")


@pytest.mark.parametrize("breakage, message", [
    (lambda d: d.drop(columns="val_acc"), "val_acc"),
    (lambda d: d.assign(epoch=0), "1-based"),
    (lambda d: d.assign(test_acc=97.0), "fraction"),
    (lambda d: d.assign(status="exploded"), "exploded"),
    (lambda d: pd.concat([d, d]), "repeat"),
])
def test_contract_violations_are_refused(breakage, message):
    df = tidy().assign(notebook="nb", run_id="r")
    with pytest.raises(ValueError, match=message):
        check_tidy(breakage(df))


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "x.json"
    write_json({"a": 1}, target)

    def failing(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert json.loads(target.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["x.json"]          # no temp file left behind


def test_manifest_and_read_runs(tmp_path):
    done, failed, missing = (tmp_path / "runs" / "nb" / rid for rid in ("r1", "r2", "r3"))
    save_results(tidy(), done, notebook="nb", run_id="r1")
    write_json(make_manifest({"epochs": 2}, "ok", "t0", "t1", 1.5, profile="quick", files=file_checksums(done)),
               done / "manifest.json")
    write_json(make_manifest({}, "failed", "t0", "t1", 0.5, error="DataMissingError: no cifar"),
               failed / "manifest.json")
    missing.mkdir(parents=True)
    results, runs = read_runs([done, failed, missing])
    assert len(results) == 4 and set(results["run_id"]) == {"r1"}
    status = runs.set_index("run_id")["status"].to_dict()
    assert status == {"r1": "ok", "r2": "failed", "r3": "missing"}
    assert runs.set_index("run_id").loc["r2", "error"].startswith("DataMissingError")
    manifest = json.loads((done / "manifest.json").read_text())
    for key in ("lenet_lib", "git_commit", "python", "torch", "torchvision", "device_name", "cpu_count"):
        assert key in manifest["provenance"]
    with pytest.raises(ValueError, match="status='great'"):
        make_manifest({}, "great", "t0", "t1", 0)
