"""The README's quickstart runs as written."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quickstart_runs():
  text = README.read_text()
  section = text.split("## Quickstart", 1)[1]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  scope: dict = {}
  exec(compile(code, "README.md", "exec"), scope)
  assert [op.name for op in scope["emu"].ops] == ["layers_0", "layers_2"]
  assert scope["y_int8"].shape == (4, 10) and scope["y_fp8"].shape == (4, 10)
  assert scope["y_big"].shape == (64, 10)
  assert scope["emu"]._compiled._cache_size() == 2  # batch 4 once for both assignments, 64 once


def test_readme_starts_with_the_two_commands():
  first_block = re.search(r"```bash\n(.*?)```", README.read_text(), re.S).group(1)
  assert first_block.splitlines()[0].startswith("make demo")
  assert first_block.splitlines()[1].startswith("make test")


@pytest.mark.slow
def test_readme_workflow_runs():
  section = README.read_text().split("## Your own model, end to end", 1)[1]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  scope: dict = {}
  exec(compile(code, "README.md", "exec"), scope)
  assert scope["profile"].delta_loss.shape == (len(scope["d"].emulator.ops), 7)
  assert [r["policy"] for r in scope["result"].rows][-1] == "learned"
  assert scope["result"].reference["fp32_accuracy"] == 1.0  # labels are fp32's own answers
