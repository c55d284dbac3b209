"""Every number in SPEC.md's worked table, computed exactly; and the `explain` command."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from softclass.diagnostics.explain import explain_vector, worked_examples
from softclass.errors import ConfigError


def _steps():
    return {
        (example.title, step.label): step for example in worked_examples() for step in example.steps
    }


def _find(label_start: str, title_part: str = ""):
    for (title, label), step in _steps().items():
        if label.startswith(label_start) and title_part in title:
            return step
    raise KeyError(label_start)


def _rounded(step, decimals=4):
    return [round(value, decimals) for value in step.exact]


def test_seed_vector_numbers():
    assert _rounded(_find("exp(logits)")) == [12.1825, 33.1155, 4.4817]
    assert _rounded(_find("sum of exp")) == [49.7796]
    assert _rounded(_find("softmax")) == [0.2447, 0.6652, 0.0900]
    assert _rounded(_find("log_softmax")) == [-1.4076, -0.4076, -2.4076]
    assert _rounded(_find("NLL = -log_softmax[1]")) == [0.4076]
    assert _rounded(_find("squared error")) == [0.1801]


def test_published_figures_that_differ_are_flagged_with_a_reason():
    for label in ("softmax", "log_softmax", "NLL = -log_softmax[1]", "squared error"):
        step = _find(label)
        assert step.differs and step.note
    assert _find("softmax").published == ("0.20", "0.70", "0.10")
    assert _find("NLL = -log_softmax[1]").published == ("0.36",)
    assert _find("squared error").published == ("0.14",)
    assert not _find("sum of exp").differs


def test_not_a_log_softmax_vector():
    assert _rounded(_find("NLL = -input[2]")) == [1.5563]
    assert not _find("NLL = -input[2]").differs
    assert _rounded(_find("logsumexp of the input")) == [-0.5544]


def test_batch_cross_entropy_and_the_wrong_published_value():
    assert _rounded(_find("per-item CE")) == [0.5542, 1.2425, 0.5542]
    assert _rounded(_find("sum", "3x4")) == [2.3510]
    mean = _find("mean CE")
    assert _rounded(mean) == [0.7837]
    assert mean.published == ("1.2321",) and mean.differs
    assert "no choice of the 64 possible target vectors gives 1.2321" in mean.note
    assert _rounded(_find("NLL(log_softmax) mean")) == [0.7837]


def test_log_of_softmax_breaks_where_log_softmax_does_not():
    naive = _find("log(softmax(x))").exact
    assert naive[1] == float("-inf")
    assert _find("log_softmax(x)").exact == (0.0, -1000.0, -2000.0)
    naive_grad = _find("d log(softmax(x))[1]").exact
    assert all(math.isnan(value) for value in naive_grad)
    assert _find("d log_softmax(x)[1]").exact == (-1.0, 1.0, 0.0)


def test_explain_vector_validates_target():
    with pytest.raises(ConfigError, match=r"target class 3 is out of range for 3 logits"):
        explain_vector((1.0, 2.0, 3.0), 3)
    with pytest.raises(ConfigError, match=r"at least one logit"):
        explain_vector((), 0)


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "softclass", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_cli_explain_prints_exact_and_published():
    result = _run("explain")
    assert result.returncode == 0, result.stderr
    for figure in ("0.4076", "0.1801", "0.7837", "1.2321", "-0.5544", "0.36"):
        assert figure in result.stdout


def test_cli_explain_custom_vector_and_errors():
    result = _run("explain", "--logits", "1,2,3", "--target", "2")
    assert result.returncode == 0 and "0.4076" in result.stdout  # -log softmax(1,2,3)[2]
    bad = _run("explain", "--logits", "1,2", "--target", "5")
    assert bad.returncode == 2
    assert "target class 5 is out of range for 2 logits" in bad.stderr
    assert "Traceback" not in bad.stderr
    garbage = _run("explain", "--logits", "1,x")
    assert garbage.returncode == 2 and "comma-separated numbers" in garbage.stderr


def test_cli_version():
    result = _run("--version")
    assert result.returncode == 0 and result.stdout.startswith("softclass ")
