"""Another git worktree's Flywheel service as a benchmark baseline (``--baseline-tree``).

The code of another commit, checked out as a git worktree (``git worktree add --detach
/work/pre11 <commit>``), is served next to this tree's: every step runs in a subprocess with
``PYTHONPATH=<tree>`` and the tree as working directory, so that tree's ``flywheel`` builds
its own world (``serving_world.py`` types the ids by that tree's schemas: int64 ids before
string ids) and computes its own ``bentoml serve`` command line and environment, whose
``--working-dir`` is the tree (its own ``serving/`` package). The interpreter and installed
packages are this process's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent

_SERVE_COMMAND = """
import json, sys
from flywheel.config import Settings
from flywheel.serving import serve_command
settings = Settings.model_validate(json.loads(sys.argv[1]))
argv, env = serve_command(settings, port=int(sys.argv[2]), workers=int(sys.argv[3]))
print("SERVE " + json.dumps({"argv": argv, "env": env}))
"""


def check_tree(tree: Path) -> Path:
    """``tree`` resolved, if it holds a Flywheel checkout (``flywheel/``, ``serving/``).

    Raises:
        ValueError: naming the path and what it lacks.
    """
    tree = Path(tree).resolve()
    for needed in ("flywheel/__init__.py", "serving/service.py"):
        if not (tree / needed).is_file():
            raise ValueError(f"--baseline-tree {tree}: no {needed}; expected a Flywheel worktree")
    return tree


def tree_environ(tree: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with ``PYTHONPATH`` = the tree only,
    so no path of this tree can shadow the other's ``flywheel``."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = str(tree)
    return env


def _run(tree: Path, argv: list[str], logfile: Path, what: str) -> str:
    done = subprocess.run(
        argv, cwd=tree, env=tree_environ(tree), capture_output=True, text=True, timeout=900
    )
    with logfile.open("a") as out:
        out.write(f"$ {' '.join(argv[:3])} ...\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        raise RuntimeError(f"{what} in {tree} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def build_tree_world(tree: Path, spec: dict[str, Any], logfile: Path, ids: str = "int") -> None:
    """Build the benchmark world of Settings ``spec`` with ``tree``'s code."""
    argv = [sys.executable, str(BENCH_DIR / "serving_world.py"), json.dumps(spec), ids]
    _run(tree, argv, logfile, "building the world")


def tree_serve_command(
    tree: Path, spec: dict[str, Any], port: int, workers: int, logfile: Path
) -> tuple[list[str], dict[str, str]]:
    """``tree``'s own ``serve_command`` for Settings ``spec``: argv and environment."""
    argv = [sys.executable, "-c", _SERVE_COMMAND, json.dumps(spec), str(port), str(workers)]
    out = _run(tree, argv, logfile, "serve_command")
    for line in out.splitlines():
        if line.startswith("SERVE "):
            found = json.loads(line.removeprefix("SERVE "))
            return list(found["argv"]), dict(found["env"])
    raise RuntimeError(f"serve_command in {tree} printed no command line: {out[-500:]}")
