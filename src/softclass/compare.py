"""Public entry point of the main job: ``from softclass.compare import compare, prepare_table``.

The job itself lives in :mod:`softclass.jobs.compare`.
"""

from softclass.data.prepare import PreparedData, prepare_table
from softclass.jobs.compare import ComparisonResult, compare

__all__ = ["ComparisonResult", "PreparedData", "compare", "prepare_table"]
