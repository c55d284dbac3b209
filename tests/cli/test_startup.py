"""Start-up: the commands and the estimator never import torch's compiler (torch._dynamo).

Each check runs in a fresh interpreter and asserts which modules are loaded — module presence,
not time (timings are in ``benchmarks/startup.py``).
"""

import json
import subprocess
import sys
import textwrap

import pytest

from softclass.data.bundled import bundled_path
from softclass.mlp.optimizers import OPTIMIZERS

# Runs in a subprocess: every step, then the list of (step, torch._dynamo loaded, torch loaded).
_SCRIPT = textwrap.dedent(
    """
    import json, sys
    steps = []

    def record(name):
        steps.append([name, "torch._dynamo" in sys.modules, "torch" in sys.modules])

    def cli(*arguments):
        from softclass.cli import app
        try:
            app(list(arguments), standalone_mode=False)
        except SystemExit as stop:
            assert not stop.code, f"{arguments} exited with {stop.code}"

    IRIS, OUT = sys.argv[1], sys.argv[2]
    import softclass.cli
    record("import softclass.cli")
    import softclass.jobs.compare, softclass.jobs.train_predict, softclass.jobs.store
    import softclass.estimator
    record("import the jobs and the estimator")
    cli("train", IRIS, "--out", f"{OUT}/sgd", "--epochs", "2")
    record("train (sgd, momentum, per-tensor updates)")
    cli("train", IRIS, "--out", f"{OUT}/sgd", "--epochs", "3", "--resume")
    record("train --resume")
    cli("train", IRIS, "--out", f"{OUT}/adam", "--epochs", "1", "--optimizer", "adam",
        "--hidden", "128,128", "--precision", "bf16")
    record("train (adam, wide, bf16)")
    from softclass.mlp.optimizers import OPTIMIZERS
    for name in OPTIMIZERS:  # the autograd Trainer (bf16), then the batched engine
        cli("train", IRIS, "--out", f"{OUT}/{name}-bf16", "--epochs", "2", "--optimizer", name,
            "--precision", "bf16")
        cli("train", IRIS, "--out", f"{OUT}/{name}-bf16", "--epochs", "3", "--optimizer", name,
            "--precision", "bf16", "--resume")
        cli("train", IRIS, "--out", f"{OUT}/engine-{name}", "--epochs", "2", "--optimizer", name)
        record(f"train --optimizer {name} (bf16, resumed; fp32)")
    import torch
    from softclass.mlp.designs import get_design
    from softclass.mlp.model import MLPConfig
    from softclass.training.config import TrainConfig
    from softclass.training.engine import train_model
    rows = torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    for backend in ("autograd", "auto"):  # no command-line flag turns Nesterov on
        config = TrainConfig(epochs=2, nesterov=True, weight_decay=0.01, backend=backend)
        train_model(get_design("A"), MLPConfig(4, 3), config, rows, torch.arange(40) % 3)
    record("fit sgd nesterov (autograd and auto backends)")
    cli("predict", f"{OUT}/sgd", IRIS, "--output", f"{OUT}/predictions.csv")
    record("predict")
    cli("compare", "--epochs", "2", "--out", f"{OUT}/compare", "--json")
    record("compare")
    cli("compare", "--epochs", "2", "--seeds", "2", "--out", f"{OUT}/seeds", "--json")
    record("compare --seeds")
    import numpy as np
    from softclass import Classifier
    features = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    labels = np.arange(300) % 3
    Classifier(hidden_layer_sizes=(8,), max_iter=2).fit(features, labels).predict(features)
    for solver in OPTIMIZERS:
        Classifier(hidden_layer_sizes=(128,), max_iter=2, solver=solver, early_stopping=True).fit(
            features, labels
        ).predict_proba(features)
    record("Classifier fit and predict")
    import torch
    torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    record("canary: torch.optim.SGD")
    print(json.dumps(steps))
    """
)


def _run(arguments, tmp_path):
    run = subprocess.run(
        [sys.executable, *arguments],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.mark.slow
def test_train_compare_predict_and_the_estimator_never_import_torch_dynamo(tmp_path):
    run = _run(["-c", _SCRIPT, str(bundled_path("iris")), str(tmp_path)], tmp_path)
    steps = json.loads(run.stdout.strip().splitlines()[-1])
    *work, canary = steps
    assert [name for name, dynamo, _ in work if dynamo] == []
    assert len(work) == 10 + len(OPTIMIZERS)
    assert [name for name, _, _ in work if "nesterov" in name or "adamw" in name] == [
        "train --optimizer adamw (bf16, resumed; fp32)",
        "fit sgd nesterov (autograd and auto backends)",
    ]
    # The check can fail: torch.optim's optimizers import torch._dynamo when they are built.
    assert canary[0] == "canary: torch.optim.SGD" and canary[1] is True


def test_help_does_not_import_torch(tmp_path):
    script = (
        "import sys\nfrom softclass.cli import app\n"
        "try:\n    app(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, 'torch._dynamo' in sys.modules)"
    )
    run = _run(["-c", script], tmp_path)
    assert "compare" in run.stdout  # the help was printed
    assert run.stdout.strip().splitlines()[-1] == "False False"


def test_compare_on_a_csv_imports_neither_pandas_nor_pyarrows_dataset_reader(tmp_path):
    # pyarrow.dataset (Parquet's reader) brings pandas with it: 0.2-0.25 s of a ~2 s compare.
    script = (
        "import sys\nfrom softclass.cli import app\n"
        f"app(['compare', '--epochs', '2', '--out', {str(tmp_path / 'run')!r}, '--json'], "
        "standalone_mode=False)\n"
        "print(sorted(m for m in ('pandas', 'pyarrow.dataset') if m in sys.modules))"
    )
    run = _run(["-c", script], tmp_path)
    assert run.stdout.strip().splitlines()[-1] == "[]"
