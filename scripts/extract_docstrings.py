"""Extract the docstring-matching task from the standard library's source (run once).

Every function or method of the standard library whose docstring is a one-line summary, a
blank line and a body gives one pair: the summary (the query) and the body with the summary
removed (the document to find). The labels come from the library's authors, not from any
model. The script parses the sources with ``ast`` (nothing is imported), keeps pairs that fit
the tokenizer's budget, drops any summary or body that occurs twice (overrides and copies
such as ``_pydecimal``/``decimal`` would make the match ambiguous) and any body that repeats
its summary (a match would be a string copy), and assigns whole top-level modules to the
calibration / validation / test splits, so no module feeds two.

  python scripts/extract_docstrings.py            # writes aprec/models/data_files/...
  python scripts/extract_docstrings.py --check    # verifies the shipped file is reproduced

The output is shipped; its SHA-256 is recorded in ``aprec.models.docstrings`` and checked
at load, so the task does not change with the Python version.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import pathlib
import random
import re
import sys
import sysconfig

from aprec.models import docstrings, minilm_files

SKIP_DIRS = {
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "site-packages",
    "ensurepip",
    "turtledemo",
    "__pycache__",
    "tkinter",
    "pydoc_data",
    "venv",
    "__phello__",
    "dist-packages",
}
MIN_SUMMARY_WORDS = 4
MIN_BODY_WORDS = 8
MAX_BODY_CHARS = 400
SPLIT_SEED = 0


def _clean(text: str) -> str:
  return re.sub(r"\s+", " ", text).strip()


def _short_body(paragraphs: list[str]) -> str:
  """The body's leading paragraphs, whole sentences only, up to ``MAX_BODY_CHARS``."""
  body = ""
  for para in paragraphs:
    for sentence in re.split(r"(?<=[.!?])\s+", _clean(para)):
      candidate = f"{body} {sentence}".strip()
      if len(candidate) > MAX_BODY_CHARS:
        return body
      body = candidate
  return body


def pairs_of_source(source: str) -> list[tuple[str, str, str]]:
  """``(qualname, summary, body)`` for each function docstring of one source file."""
  try:
    tree = ast.parse(source)
  except (SyntaxError, ValueError):
    return []
  found = []

  def visit(node, prefix):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        name = f"{prefix}{child.name}"
        if not isinstance(child, ast.ClassDef):
          doc = ast.get_docstring(child, clean=True)
          if doc:
            paragraphs = re.split(r"\n\s*\n", doc.strip())
            head = paragraphs[0].strip()
            # A one-line summary, then prose (not a signature, doctest or field list).
            if (
                "\n" not in head
                and len(paragraphs) > 1
                and not paragraphs[1].lstrip().startswith((">>>", ":", "..", "-", "*"))
            ):
              found.append((name, _clean(head), _short_body(paragraphs[1:])))
        visit(child, f"{name}.")

  visit(tree, "")
  return found


def extract(stdlib: pathlib.Path) -> list[dict]:
  pairs = []
  for path in sorted(stdlib.rglob("*.py")):
    rel = path.relative_to(stdlib)
    if SKIP_DIRS & set(rel.parts[:-1]) or rel.name.startswith("test_"):
      continue
    module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
    for qualname, summary, body in pairs_of_source(path.read_text(errors="replace")):
      if len(summary.split()) >= MIN_SUMMARY_WORDS and len(body.split()) >= MIN_BODY_WORDS:
        pairs.append({"module": module, "function": qualname, "summary": summary, "body": body})
  # Keep only summaries and bodies that occur once (case-insensitively).
  count: dict[str, int] = {}
  for p in pairs:
    for key in (p["summary"].lower(), p["body"].lower()):
      count[key] = count.get(key, 0) + 1
  pairs = [
      p
      for p in pairs
      if count[p["summary"].lower()] == 1 == count[p["body"].lower()]
      and p["summary"].lower() not in p["body"].lower()
  ]  # a match must not be a copy
  # Keep pairs that fit without truncation.
  for field, budget in (("summary", docstrings.MAX_TOKENS), ("body", docstrings.MAX_TOKENS)):
    lengths = [len(e.ids) for e in minilm_files.tokenizer().encode_batch([p[field] for p in pairs])]
    pairs = [p for p, n in zip(pairs, lengths) if n <= budget]
  return pairs


def assign_splits(pairs: list[dict], per_split: int) -> list[dict]:
  """Whole top-level modules, in a seeded random order, fill calibration, val, then test."""
  by_top: dict[str, list[dict]] = {}
  for p in pairs:
    by_top.setdefault(p["module"].split(".")[0], []).append(p)
  tops = sorted(by_top)
  random.Random(SPLIT_SEED).shuffle(tops)
  chosen, split_index, filled = [], 0, 0
  rng = random.Random(SPLIT_SEED)
  for top in tops:
    if split_index == len(docstrings.SPLITS):
      break
    group = by_top[top]
    # No module may dominate a split: at most a quarter of it comes from one module.
    group = rng.sample(group, min(len(group), per_split // 4, per_split - filled))
    for p in sorted(group, key=lambda p: (p["module"], p["function"])):
      chosen.append(dict(p, split=docstrings.SPLITS[split_index]))
    filled += len(group)
    if filled == per_split:
      split_index, filled = split_index + 1, 0
  if split_index < len(docstrings.SPLITS):
    raise SystemExit(
        f"only {len(pairs)} pairs; not enough for {len(docstrings.SPLITS)} splits "
        f"of {per_split}"
    )
  return chosen


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--per-split", type=int, default=docstrings.PAIRS_PER_SPLIT)
  parser.add_argument("--out", type=pathlib.Path, default=docstrings.DATA_FILE)
  parser.add_argument("--check", action="store_true", help="compare with the shipped file")
  args = parser.parse_args()
  stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
  pairs = extract(stdlib)
  chosen = assign_splits(pairs, args.per_split)
  payload = {
      "source": f"docstrings of the Python {sys.version.split()[0]} standard library",
      "task": "match each function's one-line summary to the rest of its docstring",
      "max_tokens": docstrings.MAX_TOKENS,
      "pairs": chosen,
  }
  text = json.dumps(payload, indent=1, ensure_ascii=False) + "\n"
  digest = hashlib.sha256(text.encode()).hexdigest()
  if args.check:
    same = args.out.read_text() == text
    print(f"{args.out}: {'reproduced' if same else 'DIFFERS from this extraction'} ({digest})")
    raise SystemExit(0 if same else 1)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text(text)
  print(f"{len(pairs)} candidate pairs; wrote {len(chosen)} to {args.out}\nsha256 {digest}")


if __name__ == "__main__":
  main()
