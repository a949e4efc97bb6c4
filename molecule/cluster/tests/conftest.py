import sys
from pathlib import Path

# The shared helpers live in molecule/resources/tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "resources" / "tests"))


def pytest_collection_modifyitems(items):
    """test_promotion.py last: it makes the worker the primary and db its replica, and every other
    check is of the converged cluster as the inventory has it."""
    items.sort(key=lambda item: item.path.name == "test_promotion.py")
