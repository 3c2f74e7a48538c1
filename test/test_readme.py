"""Every ```python block of README.md and docs/*.md runs as written.

Each block runs on its own, in a fresh namespace and a temporary directory, under
the engine whose dense int8 works on this machine: the default, or, where it does
not (aarch64, whose default is x86), qnnpack, as the README tells ARM users.
"""

import re
from pathlib import Path

import pytest
from torch.testing._internal.common_quantized import override_quantized_engine

from _reference import reference_engine

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```$", flags=re.S | re.M)
EXAMPLES = [
    (f"{path.relative_to(ROOT)} block {i}", code)
    for path in DOCUMENTS
    for i, code in enumerate(BLOCK.findall(path.read_text(encoding="utf-8")))
]


def test_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    first = BLOCK.search(readme)
    assert first is not None and "import torch_sparse_backend" in first.group(1)
    # .ci/run reads the test command from the fenced block after this marker.
    assert re.search(r"^<!-- test-command -->\n```bash\n.*python -m pytest.*\n```$", readme, flags=re.M)
    assert re.search(r"^<!-- demo-command -->\n```bash\npip install torch==2\.13\.0 numpy && .*"
                     r"python -m torch_sparse_backend demo\n```$", readme, flags=re.M)


def test_examples_are_found():
    where = {name.split(" block")[0] for name, _ in EXAMPLES}
    assert {"README.md", "docs/api.md"} <= where
    assert len(EXAMPLES) >= 4


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file."""
    headings = re.findall(r"^#+ (.*)$", BLOCK.sub("", path.read_text(encoding="utf-8")), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_doc_links_resolve():
    for path in DOCUMENTS:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", path.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            linked = (path.parent / target) if target else path
            assert linked.exists(), f"{path.name}: {target}"
            if anchor:
                assert anchor in _anchors(linked), f"{path.name}: {target}#{anchor}"


@pytest.mark.parametrize("name", [name for name, _ in EXAMPLES])
def test_example_runs(name, tmp_path, monkeypatch):
    code = dict(EXAMPLES)[name]
    monkeypatch.chdir(tmp_path)
    with override_quantized_engine(reference_engine()):
        exec(compile(code, name, "exec"), {"__name__": "__readme__"})
