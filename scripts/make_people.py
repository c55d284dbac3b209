"""Write src/softclass/data/people.csv: the seed's people → city example as raw, generated rows.

Each city has its own mean age, income and weight (well apart relative to the spread), so city is
learnable from the three features. Incomes are written as money, like ``$72,000`` (quoted, since
they contain a comma). The first row is the seed's own example ``23, $72,000, 155, Boulder``.
Fixed seed, so the output is the same on every run.

Usage: python scripts/make_people.py
"""

from pathlib import Path

import numpy as np

DESTINATION = Path(__file__).resolve().parents[1] / "src" / "softclass" / "data" / "people.csv"
SEED = 20240517
ROWS_PER_CITY = {"Anaheim": 67, "Boulder": 67, "Chicago": 66}
# city: (mean, standard deviation) of age (years), income (dollars), weight (pounds)
PROFILES = {
    "Anaheim": ((48, 7), (52_000, 7_000), (178, 14)),
    "Boulder": ((27, 5), (71_000, 7_000), (152, 12)),
    "Chicago": ((36, 6), (94_000, 8_000), (196, 14)),
}


def main() -> None:
    generator = np.random.default_rng(SEED)
    rows = []
    for city, count in ROWS_PER_CITY.items():
        (age_mean, age_std), (income_mean, income_std), (weight_mean, weight_std) = PROFILES[city]
        ages = np.clip(np.rint(generator.normal(age_mean, age_std, count)), 18, 90)
        incomes = np.rint(generator.normal(income_mean, income_std, count) / 100) * 100
        weights = np.clip(np.rint(generator.normal(weight_mean, weight_std, count)), 95, 300)
        rows.extend(zip(ages, incomes, weights, [city] * count, strict=True))
    order = generator.permutation(len(rows))
    lines = ["age,income,weight,city", '23,"$72,000",155,Boulder']
    for position in order[:-1]:
        age, income, weight, city = rows[position]
        lines.append(f'{int(age)},"${int(income):,}",{int(weight)},{city}')
    DESTINATION.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
