"""The README's Python example runs as written (a doctest over the README's ``>>>`` lines)."""
import doctest
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_python_example_runs():
    res = doctest.testfile(str(README), module_relative=False, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert res.attempted >= 5, f"the README's example lost its >>> lines ({res.attempted} attempted)"
    assert res.failed == 0, f"{res.failed} of {res.attempted} README example lines failed (see the output above)"
