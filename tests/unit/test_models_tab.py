"""The UI's Models tab: the served family, the best of every family and the baselines side by side."""

from __future__ import annotations

from kolray.serve.ui import report_table


def test_the_metrics_table_names_the_served_family_and_every_family_searched() -> None:
    report = {
        "family": "linear",
        "test": {"rmse_7d": 0.0416, "rmse_30d": 0.0388, "n": 119},
        "families": {
            "net": {"rmse_7d": 0.0478, "rmse_30d": 0.0522, "val_metric": 0.081},
            "gbt": {"rmse_7d": 0.0485, "rmse_30d": 0.0401, "val_metric": 0.073},
            "linear": {"rmse_7d": 0.0416, "rmse_30d": 0.0388, "val_metric": 0.070},
        },
        "baselines": {"mean": {"rmse_7d": 0.0457, "rmse_30d": 0.0469}, "ridge": {"rmse_7d": 0.0416}},
        "oracle": {"rmse_7d": 0.039, "rmse_30d": 0.030},
    }
    table = report_table(report)
    assert list(table[""]) == [
        "model (serves: linear model)",
        "family PyTorch network",
        "family LightGBM",
        "family linear model",
        "mean",
        "ridge",
        "oracle (ceiling)",
    ]
    assert list(table.columns) == ["", "rmse_7d", "rmse_30d", "n"]
    assert table.loc[0, "rmse_7d"] == "0.0416" and table.loc[0, "n"] == "119"
    assert table.loc[5, "rmse_30d"] == "–"  # a metric a baseline lacks is shown as missing, not 0
