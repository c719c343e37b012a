"""The repository's prose cites papers by name: a reader cannot look up a seed file or an issue tracker entry."""

import os
import re

import pytest

from support import ROOT

# "seed 004", "Seed 002's", "seeds/000_…", "issue 15", "Issue #13" (another project's issue, named with its
# repository, e.g. "ALAE issue #44", is a citation a reader can follow, so it is allowed).
UNCITABLE = re.compile(r"\bseeds?[ /]0\d\d|(?<!ALAE )\bissue #?\d+", re.IGNORECASE)
SKIP = {".git", ".venv", "runs", "node_modules", "__pycache__"}


def _prose_files():
  for top, dirs, files in os.walk(ROOT):
    dirs[:] = [d for d in dirs if d not in SKIP and not d.startswith(".")]
    for name in files:
      if name.endswith((".py", ".md")) and name != os.path.basename(__file__):
        yield os.path.join(top, name)


def test_docs_and_code_cite_no_seed_file_or_issue_number():
  found = []
  for path in _prose_files():
    with open(path, encoding="utf-8") as f:
      for n, line in enumerate(f, 1):
        if UNCITABLE.search(line):
          found.append(f"{os.path.relpath(path, ROOT)}:{n}: {line.strip()[:100]}")
  assert not found, "cite the paper or report by name:\n" + "\n".join(found)


@pytest.mark.parametrize("text, bad", [("seed 004's GAN", True), ("Seed 002", True), ("seeds/000_b90.txt", True),
                                       ("issue 15 found", True), ("Issue #13", True), ("ALAE issue #44", False),
                                       ("seed 0 and seed 1", False), ("random seeds 3", False)])
def test_the_pattern_catches_what_it_should(text, bad):
  assert bool(UNCITABLE.search(text)) == bad
