"""The README's test-kit example is the test CI runs, word for word."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_example_is_the_kit_example_test() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Test exactly-once on your own handlers", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    test_file = (ROOT / "tests/integration/kit/test_kit_example.py").read_text()
    assert example.strip() in test_file, "README example and kit test have drifted apart"
