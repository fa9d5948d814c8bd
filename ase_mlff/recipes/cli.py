"""How a recipe runs from the command line: a user error is one line, not a traceback.

    if __name__ == "__main__":
        run_recipe(main)

A *user error* (a bad flag value, a missing file or checkpoint, a busy output folder, a
resume that does not fit, AmberTools missing, a server that does not answer) prints
``error: <what is wrong>`` on stderr and exits with status 2, as argparse does for a bad
flag; ``--debug`` anywhere on the
command line shows the full traceback instead. Any other exception is a bug and keeps its
traceback. Interrupts (Ctrl-C, SIGTERM) are not caught: the MLflow runs they stop are
marked by the tracker itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ase_mlff.models.io import CheckpointError
from ase_mlff.training.stage import RunDirectoryBusy

#: exception types that mean "the input is wrong", not "the code is wrong"
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # includes DatasetError and MDParameterError
    FileNotFoundError,
    ConnectionError,  # a Ray cluster or MLflow server that does not answer
    CheckpointError,
    RunDirectoryBusy,
)


def is_user_error(err: BaseException) -> bool:
    """True for :data:`USER_ERRORS` and for a GAFF parametrisation that could not run
    (AmberTools missing or failing on the molecule)."""
    if isinstance(err, USER_ERRORS):
        return True
    gaff = sys.modules.get("ase_mlff.forcefields.gaff")
    return gaff is not None and isinstance(err, gaff.ParametrizationError)


def run_recipe(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> int:
    """Run ``main(argv)`` (default: the command line) the way the module doc says;
    returns 0, or exits with 2 after printing a user error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        main(argv)
    except Exception as err:
        if debug or not is_user_error(err):
            raise
        lines = str(err).strip().splitlines() or [type(err).__name__]
        more = " (more with --debug)" if len(lines) > 1 else ""
        print(f"error: {lines[0]}{more}", file=sys.stderr)
        raise SystemExit(2) from None
    return 0
