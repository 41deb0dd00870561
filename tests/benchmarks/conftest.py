"""tests/benchmarks: the helper module beside the tests is importable (``benchhelpers``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
