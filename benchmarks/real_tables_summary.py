"""The table and summary of ``python -m benchmarks.real_tables`` (issue 19's goals)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

SKLEARN_TABLES = ("wine", "breast_cancer", "digits")
POINT = 0.01  # a win or a loss: accuracies more than one point apart
SECTION = "## Real tables against scikit-learn (benchmarks/real_tables.py)"
HEADER = (
    "| date | commit | label | settings | tables | median acc softclass / HGB | median diff | "
    "wins-losses vs HGB | beats LR | beats MLP | mean log loss softclass / HGB | "
    "wine, breast cancer, digits softclass / MLP | RealMLP median acc | refused |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def per_table(runs: list) -> dict[str, dict]:
    """Per table: sizes, the number of refused runs and per model the mean (accuracy, log loss,
    seconds) over its seeds."""
    grouped: dict[str, list] = defaultdict(list)
    for run in runs:
        grouped[run.table].append(run)
    tables = {}
    for name, group in grouped.items():
        models = group[0].scores.keys()
        tables[name] = {
            "rows": group[0].rows,
            "columns": group[0].columns,
            "classes": group[0].classes,
            "refused": sum(bool(run.error) for run in group),
            "scores": {
                model: tuple(np.mean([run.scores[model][i] for run in group]) for i in range(3))
                for model in models
            },
        }
    return tables


def print_table(tables: dict[str, dict]) -> None:
    models = list(next(iter(tables.values()))["scores"])
    head = f"{'table':24} {'rows':>6} {'cols':>4} {'cls':>3} {'softclass acc/ll':>17} "
    head += " ".join(f"{m:>13}" for m in models[1:]) + f" {'sc s':>6} {'HGB s':>6}"
    print(head)
    for name, table in tables.items():
        scores = table["scores"]
        accuracy, loss, seconds = scores["softclass"]
        line = f"{name[:24]:24} {table['rows']:6d} {table['columns']:4d} {table['classes']:3d} "
        line += f"{accuracy:8.3f}/{loss:8.3f} "
        line += " ".join(f"{scores[m][0]:6.3f}/{scores[m][1]:6.3f}" for m in models[1:])
        line += f" {seconds:6.1f} {scores['HGB'][2]:6.2f}"
        if table["refused"]:
            line += f"  refused {table['refused']}x"
        print(line)


def summary(tables: dict[str, dict]) -> dict:
    """Issue 19's figures over the corpus tables (sklearn's three apart)."""
    corpus = {name: t for name, t in tables.items() if name not in SKLEARN_TABLES}
    result: dict = {"tables": len(corpus)}
    if corpus:
        mine = np.array([t["scores"]["softclass"][0] for t in corpus.values()])
        hgb = np.array([t["scores"]["HGB"][0] for t in corpus.values()])
        result["median_softclass"] = float(np.median(mine))
        result["median_hgb"] = float(np.median(hgb))
        result["median_diff"] = float(np.median(mine - hgb))
        result["wins"] = int(np.sum(mine - hgb > POINT))
        result["losses"] = int(np.sum(hgb - mine > POINT))
        for model in ("LR", "MLP"):
            other = np.array([t["scores"][model][0] for t in corpus.values()])
            result[f"beats_{model}"] = float(np.mean(mine > other))
        result["logloss_softclass"] = float(
            np.mean([t["scores"]["softclass"][1] for t in corpus.values()])
        )
        result["logloss_hgb"] = float(np.mean([t["scores"]["HGB"][1] for t in corpus.values()]))
        result["refused"] = sum(t["refused"] for t in corpus.values())
        if "RealMLP" in next(iter(corpus.values()))["scores"]:
            real = np.array([t["scores"]["RealMLP"][0] for t in corpus.values()])
            result["median_realmlp"] = float(np.nanmedian(real))
            result["softclass_vs_realmlp"] = (
                int(np.sum(mine - real > POINT)),
                int(np.sum(real - mine > POINT)),
            )
    result["sklearn"] = {
        name: (tables[name]["scores"]["softclass"][0], tables[name]["scores"]["MLP"][0])
        for name in SKLEARN_TABLES
        if name in tables
    }
    return result


def describe(result: dict) -> list[str]:
    lines = []
    if result["tables"]:
        lines += [
            f"corpus tables: {result['tables']} (refused runs: {result['refused']})",
            f"median accuracy: softclass {result['median_softclass']:.3f}, HGB "
            f"{result['median_hgb']:.3f}; median difference {100 * result['median_diff']:+.1f} "
            f"points (goal ≥ 0)",
            f"wins/losses vs HGB by > 1 point: {result['wins']}/{result['losses']} "
            f"(goal wins ≥ losses)",
            f"tables beating LR: {result['beats_LR']:.0%}, beating MLP: {result['beats_MLP']:.0%}"
            " (goal ≥ 67 % each)",
            f"mean log loss: softclass {result['logloss_softclass']:.4f}, HGB "
            f"{result['logloss_hgb']:.4f} (goal ≤)",
        ]
        if "median_realmlp" in result:
            wins, losses = result["softclass_vs_realmlp"]
            lines.append(
                f"RealMLP_TD median accuracy {result['median_realmlp']:.3f}; softclass wins/"
                f"losses against it {wins}/{losses}"
            )
    for name, (mine, mlp) in result["sklearn"].items():
        lines.append(f"{name}: softclass {mine:.3f}, MLPClassifier {mlp:.3f} (goal ≥)")
    return lines


def record(result: dict, settings: str, label: str) -> None:
    from benchmarks._results import append_row, commit

    def pair(a: float, b: float) -> str:
        return f"{a:.3f} / {b:.3f}" if not (math.isnan(a) or math.isnan(b)) else "n/a"

    sklearn = ", ".join(pair(*values) for values in result["sklearn"].values()) or "n/a"
    if result["tables"]:
        cells = [
            str(result["tables"]),
            pair(result["median_softclass"], result["median_hgb"]),
            f"{100 * result['median_diff']:+.1f}",
            f"{result['wins']}-{result['losses']}",
            f"{result['beats_LR']:.0%}",
            f"{result['beats_MLP']:.0%}",
            f"{result['logloss_softclass']:.4f} / {result['logloss_hgb']:.4f}",
        ]
        real = result.get("median_realmlp")
        tail = [sklearn, "n/a" if real is None else f"{real:.3f}", str(result["refused"])]
    else:
        cells, tail = ["0"] + ["n/a"] * 6, [sklearn, "n/a", "0"]
    row = "| " + " | ".join([settings.split(", ")[-1], commit(), label, settings, *cells, *tail])
    append_row(SECTION, HEADER, row + " |")


def main_summary(runs: list, settings: str, label: str) -> None:
    tables = per_table(runs)
    print_table(tables)
    result = summary(tables)
    print("\n".join(describe(result)))
    print(settings)
    if label:
        record(result, settings, label)
