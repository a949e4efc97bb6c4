import sys
from pathlib import Path

# The shared helpers live in molecule/resources/tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "resources" / "tests"))
