import sys
from pathlib import Path

# The shared helpers live in molecule/resources/tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "resources" / "tests"))


def pytest_collection_modifyitems(items):
    """test_deploy.py last, after molecule/resources/tests too: its deploys and rollbacks leave
    another release serving (version D), and every other check is of the converged site."""
    items.sort(key=lambda item: item.path.name == "test_deploy.py")
