"""Is the twin's oracle a reachable ceiling? A quick point-in-time model against ``oracle_p3x``.

From a world's ground truth, each opening buy gets features a tracker could compute at its entry:
the KOL's record from positions *closed before* the entry (count, win rate, mean log multiple, 3x
rate, 90th-percentile multiple, mean hold), the token's consensus (tracked KOLs that bought before,
buys in the last hour, hours since the last one, price change since the first tracked buy), the
trade itself (market cap at entry, venue, token age from its creation, SOL size and size relative to
the KOL's own median, hour of day). A LightGBM classifier is trained on the first half of the usable
rows (label: realised 3x within 7 days) and evaluated on the second half, where the oracle is scored
on the same rows. A second model *regresses* the oracle from the same features: how much of the
oracle's information the features carry, free of the scarcity of positive labels.

The last line is one JSON object: base rate, ROC-AUC of the model, the distilled model and the
oracle on the test rows, and the gaps.

    .venv/bin/python bench/sim_reach.py [--world DIR | --kols 250 --days 60 --seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from kolray.sim.world import generate_world, load_world

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

H = 7 * 86_400


def features(world) -> pd.DataFrame:
    positions = (
        world.positions().sort_values(["entry_time", "wallet", "mint"], kind="stable").reset_index(drop=True)
    )
    trades = world.trades()
    launch = world.tokens().set_index("mint").launch_time
    entry = trades[trades.opens_position].set_index("signature")
    closed = positions[positions.status == "closed"].sort_values("exit_time")
    closed_rows = closed[["wallet", "exit_time", "multiple", "hold_s"]].to_numpy()
    history: dict[str, list[tuple[float, float]]] = defaultdict(list)
    sizes: dict[str, list[float]] = defaultdict(list)
    token_buys: dict[str, list[tuple[int, str, float]]] = defaultdict(list)
    rows = []
    k = 0
    for p in positions.itertuples():
        while k < len(closed_rows) and closed_rows[k][1] < p.entry_time:
            wallet, _, multiple, hold = closed_rows[k]
            history[wallet].append((multiple, hold))
            k += 1
        past = history[p.wallet]
        m = np.array([x for x, _ in past]) if past else np.empty(0)
        h = np.array([y for _, y in past]) if past else np.empty(0)
        buys = token_buys[p.mint]
        trade = entry.loc[p.entry_signature]
        price = trade.price_sol
        size = trade.sol_amount / 1e9
        own = sizes[p.wallet]
        rows.append(
            {
                "n_closed": len(m),
                "win_rate": (m > 1).mean() if len(m) else np.nan,
                "mean_log_multiple": np.log(m + 1e-9).mean() if len(m) else np.nan,
                "rate_3x": (m >= 3).mean() if len(m) else np.nan,
                "q90_multiple": np.quantile(m, 0.9) if len(m) else np.nan,
                "mean_hold_h": h.mean() / 3600 if len(h) else np.nan,
                "kols_before": len({w for _, w, _ in buys if w != p.wallet}),
                "buys_last_hour": sum(1 for t, _, _ in buys if t > p.entry_time - 3600),
                "hours_since_last_buy": (p.entry_time - buys[-1][0]) / 3600 if buys else 99.0,
                "log_change_since_first": np.log(price / buys[0][2]) if buys else 0.0,
                "log_mcap": np.log(p.market_cap_sol_at_entry)
                if p.market_cap_sol_at_entry == p.market_cap_sol_at_entry
                else np.log(price * 1e9),
                "amm": float(p.venue_at_entry != "pumpfun"),
                "token_age_h": (p.entry_time - launch[p.mint]) / 3600,
                "log_size": np.log(size),
                "rel_size": np.log(size / np.median(own)) if own else 0.0,
                "hour": (p.entry_time % 86_400) / 3600,
            }
        )
        buys.append((p.entry_time, p.wallet, price))
        own.append(size)
    frame = pd.DataFrame(rows)
    frame["label"] = positions.label_3x.astype(int).to_numpy()
    frame["oracle"] = positions.oracle_p3x.to_numpy()
    frame["usable"] = positions.usable.to_numpy()
    frame["entry_time"] = positions.entry_time.to_numpy()
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path)
    parser.add_argument("--kols", type=int, default=250)
    parser.add_argument("--days", type=float, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a WorldParams field for the generated world (repeatable)")  # fmt: skip
    parser.add_argument("--keep", type=Path, help="write the generated world here instead of a temporary dir")
    args = parser.parse_args()
    overrides = {}
    for item in args.param:
        name, _, value = item.partition("=")
        overrides[name] = json.loads(value)
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    with tempfile.TemporaryDirectory() as tmp:
        path = args.world
        if path is None:
            path = Path(tmp) / "world"
            print(
                f"generating a world ({args.kols} KOLs, {args.days:g} days, seed {args.seed})...", flush=True
            )
            generate_world(path, kols=args.kols, days=args.days, seed=args.seed)
        world = load_world(path)
        frame = features(world)
    usable = frame[frame.usable].reset_index(drop=True)
    cut = usable.entry_time.quantile(0.5)
    train, test = usable[usable.entry_time < cut], usable[usable.entry_time >= cut]
    columns = [c for c in frame.columns if c not in ("label", "oracle", "usable", "entry_time")]
    model = lgb.LGBMClassifier(n_estimators=300, learning_rate=0.03, num_leaves=15, min_child_samples=50,
                               subsample=0.8, subsample_freq=1, colsample_bytree=0.8, verbose=-1)  # fmt: skip
    model.fit(train[columns], train.label)
    predicted = np.asarray(model.predict_proba(test[columns]))[:, 1]
    distilled = lgb.LGBMRegressor(
        n_estimators=400, learning_rate=0.03, num_leaves=31, min_child_samples=50, verbose=-1
    )
    distilled.fit(train[columns], np.sqrt(train.oracle))
    from_oracle = distilled.predict(test[columns])
    result = {
        "bench": "sim_reach",
        "world": {
            "kols": world.params.kols,
            "days": world.params.days,
            "seed": world.params.seed,
            **overrides,
        },
        "rows_train": len(train),
        "rows_test": len(test),
        "positives_train": int(train.label.sum()),
        "positives_test": int(test.label.sum()),
        "base_rate": round(float(usable.label.mean()), 5),
        "model_auc": round(roc_auc_score(test.label, predicted), 4),
        "distilled_auc": round(roc_auc_score(test.label, from_oracle), 4),
        "oracle_auc": round(roc_auc_score(test.label, test.oracle), 4),
        "distilled_corr_with_oracle": round(float(np.corrcoef(from_oracle, np.sqrt(test.oracle))[0, 1]), 4),
    }
    result["gap_model"] = round(result["oracle_auc"] - result["model_auc"], 4)
    result["gap_distilled"] = round(result["oracle_auc"] - result["distilled_auc"], 4)
    print(f"base rate {result['base_rate']:.4f}; test positives {result['positives_test']}")
    print(f"ROC-AUC  model {result['model_auc']:.3f}  distilled {result['distilled_auc']:.3f}  "
          f"oracle {result['oracle_auc']:.3f}")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
