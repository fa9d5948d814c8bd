"""A patch that marks chosen functions of a module as "added", for ``mutmut run
--use-patch-file``: mutmut then mutates those lines only.

    python benchmarks/mutation_lines.py ase_mlff/training/trainer.py \\
        Trainer._save_state Trainer.try_resume Trainer.train_epoch Trainer.__init__:self.sam

``Class.method`` takes the whole method; ``Class.method:target`` only the assignments to
``target`` inside it; ``lines:A-B`` the lines A to B (to split a long module between two
mutmut runs). The patch is printed (unified diff, the module against itself with
those lines removed)."""

from __future__ import annotations

import ast
import difflib
import sys


def line_ranges(path: str, names: list[str]) -> list[tuple[int, int]]:
    tree = ast.parse(open(path).read())
    out = []
    for name in names:
        if name.startswith("lines:"):
            a, b = name.removeprefix("lines:").split("-")
            out.append((int(a), int(b)))
            continue
        qual, _, target = name.partition(":")
        cls, _, meth = qual.partition(".")
        node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
        fn = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == meth)
        if not target:
            out.append((fn.lineno, fn.end_lineno))
            continue
        for n in ast.walk(fn):
            if isinstance(n, ast.Assign) and any(ast.unparse(t) == target for t in n.targets):
                out.append((n.lineno, n.end_lineno))
    return out


def patch(path: str, names: list[str]) -> str:
    lines = open(path).read().splitlines(keepends=True)
    drop = {i for a, b in line_ranges(path, names) for i in range(a, b + 1)}
    old = [x for i, x in enumerate(lines, 1) if i not in drop]
    return "".join(difflib.unified_diff(old, lines, path, path, n=0))


if __name__ == "__main__":
    sys.stdout.write(patch(sys.argv[1], sys.argv[2:]))
