#!/usr/bin/env python3
"""Checks docs/semantics.md against the test sources: every `Suite.Test` the rule table names
must be defined (TEST/TEST_F/TEST_P) under host-backend/tests/ or guest-tests/, and every rule
row must name at least one test (a "see ..." reference alone is not one). `Suite.*` names a
whole suite, which must exist."""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
table = (root / "docs" / "semantics.md").read_text()
defined = set()
sources = list((root / "host-backend" / "tests").rglob("*.cc"))
sources += list((root / "guest-tests").glob("*.cc"))
for src in sources:
    for m in re.finditer(r"^\s*TEST(?:_F|_P)?\(\s*(\w+)\s*,\s*(\w+)\s*\)", src.read_text(), re.M):
        defined.add(f"{m.group(1)}.{m.group(2)}")
suites = {name.split(".")[0] for name in defined}

errors = []
rows = 0
for line in table.splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) < 3 or not re.fullmatch(r"S\d+\w?|X\d+", cells[0]):
        continue
    rows += 1
    cited = re.findall(r"`(\w+)\.(\w+|\*)`", cells[-1])
    if not cited:
        errors.append(f"rule {cells[0]} names no test")
    for suite, test in cited:
        name = f"{suite}.{test}"
        if test == "*":
            if suite not in suites:
                errors.append(f"rule {cells[0]}: no test suite {suite}")
        elif name not in defined:
            errors.append(f"rule {cells[0]}: no test {name}")

for e in errors:
    print("rule table:", e)
print(f"rule table: {rows} rules, {len(defined)} tests defined, {len(errors)} problems")
sys.exit(1 if errors or rows == 0 else 0)
