"""`make bench`'s one-model table: every path timed, ratios against the reports' path, the time split."""
import torch

from lenet_lib import bench


def test_single_model_table_and_time_split(mnist_small):
    table = bench.single_model(1, 1280, torch.device("cpu"))
    assert list(table["path"]) == list(bench.PATHS)
    assert (table["images_per_s"] > 0).all() and (table["epochs_timed"] == 1).all()
    assert table["ratio_vs_reports"].iloc[0] == 1.0
    by_path = table.set_index("path")["images_per_s"]
    # Reading the data alone is faster than reading it and training on it.
    assert by_path[bench.DATA_ONLY] > by_path[bench.REPORTS]
    split = bench.time_split(table, 1280)
    seconds = 1280 / table.set_index("path")["images_per_s_median"]
    assert f"reports' epoch {seconds[bench.REPORTS]:.2f} s" in split
    assert f"3x needs lenet_lib's epoch <= {seconds[bench.REPORTS] / 3:.2f} s" in split
