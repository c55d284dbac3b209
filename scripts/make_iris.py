"""Write src/softclass/data/iris.csv from scikit-learn's bundled Iris data (run once, offline).

Usage: python scripts/make_iris.py
"""

from pathlib import Path

from sklearn.datasets import load_iris

DESTINATION = Path(__file__).resolve().parents[1] / "src" / "softclass" / "data" / "iris.csv"
COLUMNS = ("sepal_length", "sepal_width", "petal_length", "petal_width", "species")


def main() -> None:
    iris = load_iris()
    lines = [",".join(COLUMNS)]
    for measurements, class_index in zip(iris.data, iris.target, strict=True):
        values = [f"{value:g}" for value in measurements]
        lines.append(",".join([*values, str(iris.target_names[class_index])]))
    DESTINATION.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
