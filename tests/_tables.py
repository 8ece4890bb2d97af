"""Checks of the benchmark scripts' markdown tables (their smoke tests share them)."""


def ratio_agrees(printed: float, numerator: float, denominator: float, places: int) -> bool:
    """Whether a table's ratio (printed to 0.01) is ``numerator / denominator`` as far as the
    table's own rounding of both times (to ``places`` decimals) allows: at a small fraction of
    a millisecond that rounding alone moves the recomputed ratio by several percent."""
    ratio = numerator / denominator
    half = 0.5 * 10.0 ** -places
    slack = 1.05 * ratio * (half / denominator + half / numerator) + 0.006
    return abs(printed - ratio) <= slack
