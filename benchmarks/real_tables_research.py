"""Research for issue 19's defaults: candidate settings on the real-tables corpus, in-process.

Run from the repository root: ``python -m benchmarks.real_tables_research --baseline RUNS.jsonl``
(softclass importable). Each (table, seed) is split and written exactly as
``benchmarks.real_tables`` does, and prepared as ``softclass train`` prepares it
(:func:`softclass.jobs.compare.prepare_table` with ``--missing impute``, ``rownames`` dropped,
the ``--validation`` share held out for early stopping); then every candidate of ``CANDIDATES``
trains through :func:`softclass.training.engine.train_model` (the engine ``train`` uses, without
the report and model files) and is scored on the test rows. A candidate may average ``members``
models of different seeds, or refit on all training rows for the epoch count early stopping
chose. The summary compares each candidate with the scikit-learn scores of the same runs read
from a ``benchmarks.real_tables --log`` file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np

from benchmarks.real_tables import ID_COLUMN, POINT, _split, load_corpus, load_frame, score

# name: (TrainConfig options, hidden widths, activation, validation share, members, refit,
# normalization[, label smoothing, the --label-smoothing option])
MAIN = {"epochs": 200, "batch_size": 200, "optimizer": "adam", "learning_rate": 1e-3}
MAIN["patience"] = 10
LONG = {**MAIN, "batch_size": 64, "patience": 20, "epochs": 300}
ADAMW = {**LONG, "optimizer": "adamw", "weight_decay": 0.1}
CANDIDATES = {
    "main": (MAIN, (100,), "relu", 0.2, 1, False, "zscore"),
    "b64": (LONG, (100,), "relu", 0.2, 1, False, "zscore"),
    "b32": ({**LONG, "batch_size": 32}, (100,), "relu", 0.2, 1, False, "zscore"),
    "b64_v10": (LONG, (100,), "relu", 0.1, 1, False, "zscore"),
    "w256x2_b64": (LONG, (256, 256), "relu", 0.2, 1, False, "zscore"),
    "w256x2_b64_wd": (
        {**LONG, "optimizer": "adamw", "weight_decay": 0.1},
        (256, 256),
        "relu",
        0.2,
        1,
        False,
        "zscore",
    ),
    "w512_b64_lr3": ({**LONG, "learning_rate": 3e-4}, (512,), "relu", 0.2, 1, False, "zscore"),
    "b64_refit": (LONG, (100,), "relu", 0.2, 1, True, "zscore"),
    "b64_ens4": (LONG, (100,), "relu", 0.2, 4, False, "zscore"),
    "robust": (LONG, (100,), "relu", 0.2, 1, False, "robust"),
    "robust_ens4": (LONG, (100,), "relu", 0.2, 4, False, "robust"),
    "robust_w256x2": (LONG, (256, 256), "relu", 0.2, 1, False, "robust"),
    "robust_w256": (LONG, (256,), "relu", 0.2, 1, False, "robust"),
    "robust_b32": ({**LONG, "batch_size": 32}, (100,), "relu", 0.2, 1, False, "robust"),
    "robust_ple8": (LONG, (100,), "relu", 0.2, 1, False, "robust+ple8"),
    "robust_ple16": (LONG, (100,), "relu", 0.2, 1, False, "robust+ple16"),
    "zscore_ple16": (LONG, (100,), "relu", 0.2, 1, False, "zscore+ple16"),
    "robust_ple32": (LONG, (100,), "relu", 0.2, 1, False, "robust+ple32"),
    "robust_ple16_ens4": (LONG, (100,), "relu", 0.2, 4, False, "robust+ple16"),
    "robust_ple16_w256": (LONG, (256,), "relu", 0.2, 1, False, "robust+ple16"),
    "robust_ple16_b32": ({**LONG, "batch_size": 32}, (100,), "relu", 0.2, 1, False, "robust+ple16"),
    "robust_ple16_lr3e3": (
        {**LONG, "learning_rate": 3e-3},
        (100,),
        "relu",
        0.2,
        1,
        False,
        "robust+ple16",
    ),
    "robust_ple16_v10": (LONG, (100,), "relu", 0.1, 1, False, "robust+ple16"),
    # s6: around the table defaults (robust scaling, 8 bins)
    "ple8_adamw1e-1": (ADAMW, (100,), "relu", 0.2, 1, False, "robust+ple8"),
    "ple8_adamw1": ({**ADAMW, "weight_decay": 1.0}, (100,), "relu", 0.2, 1, False, "robust+ple8"),
    "ple8_l2_1e-4": ({**LONG, "weight_decay": 1e-4}, (100,), "relu", 0.2, 1, False, "robust+ple8"),
    "ple8_lr2e-3": ({**LONG, "learning_rate": 2e-3}, (100,), "relu", 0.2, 1, False, "robust+ple8"),
    "ple8_lr5e-4": ({**LONG, "learning_rate": 5e-4}, (100,), "relu", 0.2, 1, False, "robust+ple8"),
    "ple8_w100x2": (LONG, (100, 100), "relu", 0.2, 1, False, "robust+ple8"),
    "ple8_w50": (LONG, (50,), "relu", 0.2, 1, False, "robust+ple8"),
    "ple8_p40": ({**LONG, "patience": 40}, (100,), "relu", 0.2, 1, False, "robust+ple8"),
    "ple8_refit": (LONG, (100,), "relu", 0.2, 1, True, "robust+ple8"),
    "ple8_v10": (LONG, (100,), "relu", 0.1, 1, False, "robust+ple8"),
    "ple8_ls05": (LONG, (100,), "relu", 0.2, 1, False, "robust+ple8", 0.05),
    "ple8_ls1": (LONG, (100,), "relu", 0.2, 1, False, "robust+ple8", 0.1),
    "ple8_ls2": (LONG, (100,), "relu", 0.2, 1, False, "robust+ple8", 0.2),
    # s7: label smoothing around 0.1, alone and with validation share 0.1
    "ple8_ls15": (LONG, (100,), "relu", 0.2, 1, False, "robust+ple8", 0.15),
    "ple8_ls05_v10": (LONG, (100,), "relu", 0.1, 1, False, "robust+ple8", 0.05),
    "ple8_ls1_v10": (LONG, (100,), "relu", 0.1, 1, False, "robust+ple8", 0.1),
    # s8: TabM's lever on the ε 0.15 defaults: k members trained at once by the engine
    # (different initialisations, one holdout), k members each with its own holdout, a refit
    "ls15_ens4": (LONG, (100,), "relu", 0.2, 4, False, "robust+ple8", 0.15),
    "ls15_ens8": (LONG, (100,), "relu", 0.2, 8, False, "robust+ple8", 0.15),
    "ls15_ens4_own": (LONG, (100,), "relu", 0.2, 4, False, "robust+ple8", 0.15),
    "ls15_refit": (LONG, (100,), "relu", 0.2, 1, True, "robust+ple8", 0.15),
}
# Members each early-stopped on their own stratified holdout (seed + 1000 * member) of the
# training rows, so that together they train on every row; the others share one holdout.
OWN_HOLDOUT = {"ls15_ens4_own"}


def piecewise_linear(data, test_features, bins: int):
    """``data`` and ``test_features`` with, after the features, a piecewise-linear encoding of
    every output with more than 2 distinct training values: per quantile bin [e_t, e_t+1] of the
    training rows, clip((x - e_t) / (e_t+1 - e_t), 0, 1) (Gorishniy et al. 2022)."""
    import dataclasses

    import torch

    train = data.train_features
    columns = [j for j in range(train.shape[1]) if torch.unique(train[:, j]).numel() > 2]
    pieces: list[tuple[int, torch.Tensor]] = []
    for column in columns:
        quantiles = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
        edges = torch.unique(torch.quantile(train[:, column].double(), quantiles)).float()
        if edges.numel() >= 3:
            pieces.append((column, edges))

    def expand(features):
        if features is None or not pieces:
            return features
        extra = []
        for column, edges in pieces:
            values = features[:, column : column + 1]
            low, width = edges[:-1], edges[1:] - edges[:-1]
            extra.append(((values - low) / width).clamp(0, 1))
        return torch.cat([features, *extra], dim=1)

    expanded = dataclasses.replace(
        data,
        train_features=expand(data.train_features),
        validation_features=expand(data.validation_features),
    )
    return expanded, expand(test_features)


def prepared_split(
    package: str, item: str, target: str, seed: int, max_rows: int, share: float, scaling: str
):
    """(PreparedData of the training rows, test features, test label indices)."""
    import tempfile

    from softclass.data import read_table
    from softclass.data.prepare import prepare_table

    frame = load_frame(package, item, target, max_rows)
    train_rows, test_rows = _split(frame, target, seed=seed, test_size=0.2)
    with tempfile.TemporaryDirectory(prefix="real_tables_research-") as directory:
        train, test = Path(directory) / "train.csv", Path(directory) / "test.csv"
        train_rows.to_csv(train, index=False)
        test_rows.to_csv(test, index=False)
        train_table = read_table(train, raw=True)
        test_table = read_table(test, raw=True)
    drop = [ID_COLUMN] if ID_COLUMN in train_table.columns else []
    data = prepare_table(
        train_table,
        target,
        missing="impute",
        drop=drop,
        validation_fraction=share,
        seed=seed,
        normalization=scaling.split("+")[0],
    )
    prepared = data.recipe.prepare(test_table, use_target=False, on_error="skip")
    labels = data.recipe.label_indices(test_table)[prepared.rows]
    if "+ple" in scaling:
        bins = int(scaling.split("+ple")[1])
        expanded, test_features = piecewise_linear(data, prepared.features, bins)
        return expanded, test_features, labels
    return data, prepared.features, labels


def train_probabilities(data, test_features, candidate, seed: int, own: bool = False):
    """Mean test probabilities over the candidate's members, and the seconds it took.

    Several members with one holdout train at once (:func:`train_ensemble`, the engine's M
    models); with ``own`` holdouts (``data`` then has none) each member trains alone on its own
    split of the training rows."""
    import torch

    from softclass.mlp.designs import get_design
    from softclass.mlp.model import MLPConfig
    from softclass.training.config import TrainConfig

    options, hidden, activation, share, members, refit, _, *smoothing = candidate
    options = {**options, "label_smoothing": smoothing[0] if smoothing else 0.0}
    design = get_design("A")
    model_config = MLPConfig(data.n_features, data.n_classes, tuple(hidden), activation)
    config = TrainConfig(**options, seed=seed, device="cpu", threads=1, validation_fraction=share)
    start = time.perf_counter()
    if own:
        models = _own_holdouts(data, design, model_config, config, members)
    elif members > 1:
        models = _at_once(data, design, model_config, config, members)
    else:
        models = [_one(data, design, model_config, config, refit)]
    total = torch.zeros(test_features.shape[0], data.n_classes, dtype=torch.float64)
    with torch.no_grad():
        for model in models:
            total += design.predict_proba(model(test_features)).double()
    return (total / len(models)).numpy(), time.perf_counter() - start


def _one(data, design, model_config, config, refit: bool):
    """One model, refitted on every training row for its early-stopped epoch count."""
    import torch

    from softclass.training.engine import train_model

    result = train_model(design, model_config, config, data.train_features,
                         data.train_targets, data.validation_features,
                         data.validation_targets)  # fmt: skip
    if refit and data.validation_features is not None:
        epochs = result.history.best_epoch or config.epochs
        config = dataclasses.replace(config, epochs=epochs, patience=None)
        features = torch.cat([data.train_features, data.validation_features])
        targets = torch.cat([data.train_targets, data.validation_targets])
        result = train_model(design, model_config, config, features, targets)
    return result.model


def _at_once(data, design, model_config, config, members: int):
    """``members`` models of seeds seed + 1000 m trained together by the engine."""
    from softclass.training.ensemble import Member, train_ensemble

    grid = [Member(design.name, config.seed + 1000 * member) for member in range(members)]
    result = train_ensemble(model_config, grid, data.train_features, data.train_targets,
                            config, data.validation_features,
                            data.validation_targets)  # fmt: skip
    return [result.model(member) for member in range(members)]


def _own_holdouts(data, design, model_config, config, members: int):
    """``members`` models, each early-stopped on its own stratified holdout."""
    from softclass.data.split import stratified_split
    from softclass.training.engine import train_model

    models = []
    for member in range(members):
        member_seed = config.seed + 1000 * member
        train, held = stratified_split(data.train_targets, config.validation_fraction, member_seed)
        member_config = dataclasses.replace(config, seed=member_seed)
        result = train_model(design, model_config, member_config, data.train_features[train],
                             data.train_targets[train], data.train_features[held],
                             data.train_targets[held])  # fmt: skip
        models.append(result.model)
    return models


def run_task(task: tuple) -> list[dict]:
    (package, item, target), seed, names, max_rows = task
    out = []
    prepared = {}
    for name in names:
        candidate = CANDIDATES[name]
        own = name in OWN_HOLDOUT
        key = (0.0 if own else candidate[3], candidate[6])
        if key not in prepared:
            prepared[key] = prepared_split(package, item, target, seed, max_rows, *key)
        data, features, labels = prepared[key]
        classes = [str(index) for index in range(data.n_classes)]
        probabilities, seconds = train_probabilities(data, features, candidate, seed, own)
        label_names = np.array([str(int(label)) for label in labels], dtype=object)
        accuracy, loss = score(label_names, classes, probabilities)
        out.append({"candidate": name, "table": item, "seed": seed, "accuracy": accuracy,
                    "log_loss": loss, "seconds": seconds})  # fmt: skip
    return out


def summarise(results: list[dict], baseline: Path) -> None:
    base = {}
    for line in baseline.read_text().splitlines():
        run = json.loads(line)
        base[(run["table"], run["seed"])] = run["scores"]
    by_name: dict[str, dict] = {}
    for row in results:
        by_name.setdefault(row["candidate"], {})[(row["table"], row["seed"])] = row
    for name, rows in by_name.items():
        keys = [key for key in rows if key in base and not rows[key].get("refused")
                and key[0] not in ("wine", "digits", "breast_cancer")]  # fmt: skip
        tables = sorted({key[0] for key in keys})

        def mean(model, index, table, rows=rows, keys=keys):
            values = [base[key][model][index] if model != "me" else
                      (rows[key]["accuracy"], rows[key]["log_loss"])[index]
                      for key in keys if key[0] == table]  # fmt: skip
            return float(np.mean(values))

        mine = np.array([mean("me", 0, t) for t in tables])
        hgb = np.array([mean("HGB", 0, t) for t in tables])
        lr = np.array([mean("LR", 0, t) for t in tables])
        mlp = np.array([mean("MLP", 0, t) for t in tables])
        ll_mine = np.mean([mean("me", 1, t) for t in tables])
        ll_hgb = np.mean([mean("HGB", 1, t) for t in tables])
        sk = {table: round(float(np.mean([rows[key]["accuracy"] for key in rows
                                          if key[0] == table])), 3)
              for table in ("wine", "breast_cancer", "digits")
              if any(key[0] == table for key in rows)}  # fmt: skip
        seconds = sum(row["seconds"] for row in rows.values())
        print(
            f"{name:16} n={len(tables):2d} med {np.median(mine):.3f}/{np.median(hgb):.3f} "
            f"diff {100 * np.median(mine - hgb):+.1f} W/L {np.sum(mine - hgb > POINT)}/"
            f"{np.sum(hgb - mine > POINT)} >LR {np.sum(mine > lr)} >MLP "
            f"{np.sum(mine > mlp)} ll {ll_mine:.4f}/{ll_hgb:.4f} {sk} {seconds:.0f}s"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--tables")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--max-rows", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines results (appended)")
    arguments = parser.parse_args(argv)
    names = arguments.candidates.split(",")
    entries = load_corpus(Path("/work/shared/benchmark-tables.csv"),
                          arguments.tables.split(",") if arguments.tables else None)  # fmt: skip
    done = set()
    if arguments.out.exists():
        for line in arguments.out.read_text().splitlines():
            row = json.loads(line)
            done.add((row["candidate"], row["table"], row["seed"]))
    tasks = []
    for entry in entries:
        for seed in map(int, arguments.seeds.split(",")):
            todo = [name for name in names if (name, entry[1], seed) not in done]
            if todo:
                tasks.append((entry, seed, todo, arguments.max_rows))
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(arguments.jobs) as pool:
        for rows in pool.imap_unordered(_safe_task, tasks):
            with arguments.out.open("a") as file:
                for row in rows:
                    file.write(json.dumps(row) + "\n")
    results = [json.loads(line) for line in arguments.out.read_text().splitlines()]
    summarise([row for row in results if row["candidate"] in names], arguments.baseline)


def _safe_task(task: tuple) -> list[dict]:
    try:
        return run_task(task)
    except Exception:  # a refused table: the same for every candidate, left out
        (_, item, _), seed, names, _ = task
        failed = {"accuracy": 0.0, "log_loss": math.nan, "seconds": 0.0, "refused": True}
        return [{"candidate": name, "table": item, "seed": seed, **failed} for name in names]


if __name__ == "__main__":
    main()
