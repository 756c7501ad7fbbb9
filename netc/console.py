"""The rich console every table of the CLI prints through.

On a terminal, rich fits tables to its width. Piped or captured (CI logs, `make demo | tee`),
rich would assume 80 columns and fold cells mid-word; a wide fixed width keeps each row whole.
"""

from __future__ import annotations

import sys

from rich.console import Console

PIPE_WIDTH = 200


def console() -> Console:
    return Console() if sys.stdout.isatty() else Console(width=PIPE_WIDTH)
