"""The `multidistill` console script: a Ctrl-C while the command's libraries are imported (about a second: typer,
rich, transformers, datasets) ends with one line, not a traceback from inside an import.

The command itself is `multidistill.cli.main`; importing that module must not change a Python user's signal
handling, so the catching is done here, in the script's own entry point.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Import the command line and run it."""
    try:
        from multidistill.cli import main as run
    except KeyboardInterrupt:
        print("interrupted while starting; nothing was done", file=sys.stderr)
        sys.exit(130)
    run()


if __name__ == "__main__":
    main()
