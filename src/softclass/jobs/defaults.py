"""The two sets of defaults of ``compare`` and ``train``: the demonstration, and a user's table.

On the bundled Iris the defaults are the seed's network, 4-7-3 tanh trained with SGD: it is the
demonstration the articles build on, and it trains in a fraction of a second. On a user's table
that network loses to scikit-learn (digits: 0.930 against 0.969 for ``MLPClassifier``), so the
defaults there follow ``MLPClassifier``'s own: 100 ReLU units, Adam with learning rate 1e-3,
batches of 200 rows, at most 200 epochs, and early stopping after 10 epochs without a better
loss on a held-out tenth of the training rows (best weights restored). Any option given on the
command line overrides its default; ``python -m benchmarks.defaults_vs_sklearn`` measures the
table defaults against scikit-learn (figures in benchmarks/RESULTS.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Defaults:
    """One set of defaults for the network and its training.

    Attributes:
        name: "demonstration" (the bundled Iris) or "table" (a user's table).
        reason: one line on why these defaults, for the report.
        hidden: hidden layer widths.
        activation, optimizer, learning_rate, momentum, batch_size, epochs: as
            :class:`softclass.training.config.TrainConfig` and the MLP.
        patience: early stopping patience in epochs, or None for no early stopping.
        stopping_fraction: share of the training rows held out to choose the epoch (with
            ``patience``).
    """

    name: str
    reason: str
    hidden: tuple[int, ...]
    activation: str
    optimizer: str
    learning_rate: float
    momentum: float
    batch_size: int
    epochs: int
    patience: int | None
    stopping_fraction: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (report.json's ``defaults``)."""
        return {**asdict(self), "hidden": list(self.hidden)}

    def train_options(self) -> dict[str, Any]:
        """The keyword arguments of :class:`softclass.training.config.TrainConfig` these
        defaults set (the network's shape, ``hidden`` and ``activation``, goes to the MLP)."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "learning_rate": self.learning_rate,
            "momentum": self.momentum,
            "patience": self.patience,
        }


DEMONSTRATION = Defaults(
    name="demonstration",
    reason="the seed's 4-7-3 tanh network trained with SGD (lr 0.01, momentum 0.9, batch 16, "
    "100 epochs): the articles' example",
    hidden=(7,),
    activation="tanh",
    optimizer="sgd",
    learning_rate=0.01,  # with momentum 0.9 fits z-scored Iris in 100 epochs
    momentum=0.9,
    batch_size=16,
    epochs=100,
    patience=None,
    stopping_fraction=0.1,
)

TABLE = Defaults(
    name="table",
    reason="scikit-learn MLPClassifier's defaults: 100 ReLU units, Adam with lr 1e-3, batch 200, "
    "at most 200 epochs, early stopping (patience 10) on a tenth of the training rows",
    hidden=(100,),
    activation="relu",
    optimizer="adam",
    learning_rate=0.001,
    momentum=0.9,  # unused by Adam; kept so that --optimizer sgd gets the usual momentum
    batch_size=200,
    epochs=200,
    patience=10,
    stopping_fraction=0.1,
)


def defaults_for(bundled: bool) -> Defaults:
    """The demonstration defaults for the bundled Iris, the table defaults otherwise."""
    return DEMONSTRATION if bundled else TABLE
