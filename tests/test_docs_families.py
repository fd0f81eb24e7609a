"""docs/families.md lists every registered family with its config class (so the table cannot drift)."""

from pathlib import Path

from iclab.models import MODELS
from iclab.tasks import TASKS

DOC = Path(__file__).resolve().parents[1] / "docs" / "families.md"


def test_every_registered_family_has_a_row():
    text = DOC.read_text(encoding="utf-8")
    for registry in (TASKS, MODELS):
        for name in registry.names():
            cls = registry.config_class(name)
            assert f"| `{name}` | `{cls.__module__}.{cls.__name__}` |" in text, name
