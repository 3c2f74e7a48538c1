"""The README's examples run as written.

Under the engine whose dense int8 works on this machine: the default, or, where
it does not (aarch64, whose default is x86), qnnpack, as the README tells ARM users.
"""

import re
from pathlib import Path

import pytest
from torch.testing._internal.common_quantized import override_quantized_engine

from _reference import reference_engine

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
EXAMPLES = re.findall(r"<!-- readme-example -->\n```python\n(.*?)```", README, flags=re.S)


def test_readme_has_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with override_quantized_engine(reference_engine()):
        exec(compile(EXAMPLES[index], f"README example {index}", "exec"), {"__name__": "__readme__"})
