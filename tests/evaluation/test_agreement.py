"""The agreement record of two designs: its verdict and the sentence that explains it."""

from softclass.evaluation.agreement import Agreement


def test_agreement_verdicts_in_words():
    same = Agreement("A", "B", 0, [0.0, 0.0], [0.0, 0.0], [0.0], [1])
    assert same.verdict == "identical"
    assert same.explanation() == (
        "bit for bit the same weights over 2 epochs; float64 gradients at the same weights "
        "agree to 0e+00"
    )
    # Identical weights but other gradients: a backend that did not train the registry's loss.
    unfaithful = Agreement("A", "B", 0, [0.0, 0.0], [0.0, 0.0], [1.0], [1])
    assert unfaithful.verdict == "different"
    rounding = Agreement("A", "D", 0, [1e-7, 4.3e-2], [1e-7, 1e-5], [3e-16, 5e-16], [1, 2], 5.1e-2)
    assert rounding.verdict == "equal up to rounding" and rounding.needs_noise_floor
    assert rounding.explanation() == (
        "float64 gradients at the same weights agree to 5e-16, so every step makes the same "
        "update; float32 rounding moves the weights apart by up to 4.30e-02 over 2 epochs; A "
        "against itself nudged by one ulp: 5.10e-02"
    )
    other = Agreement("A", "C", 0, [0.2, 0.4], None, [0.7, 0.8], [1, 2])
    assert other.verdict == "different" and not other.needs_noise_floor
    assert other.explanation() == (
        "float64 gradients at the same weights differ by 8.0e-01 (relative): another loss; "
        "weights apart by up to 4.00e-01"
    )
