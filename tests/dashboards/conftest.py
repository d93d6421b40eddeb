import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "dashboards"))  # dashboards/ holds scripts, not an installed package
sys.path.insert(0, str(ROOT))  # tests.support
