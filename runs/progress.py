"""The progress display of a stage: one tqdm bar on stderr, the same shape for every stage.

Each bar shows the count done, elapsed time, an ETA and a rate in the stage's unit a
second (``videos/s``, never tqdm's inverted ``s/video`` for slow stages), plus what the
stage adds (frames/s, failures). A disabled bar is a no-op, so stages call it always.
"""

from __future__ import annotations

import sys
from typing import Any

BAR_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt} "
    "[{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"
)


def stage_bar(desc: str, total: int, unit: str, enabled: bool, *, leave: bool = True) -> Any:
    """A bar for ``total`` items of ``unit``, a plural (``videos``: the rate reads ``videos/s``)."""
    from tqdm.auto import tqdm  # loaded only by a run that shows progress or makes a bar

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=leave,
                file=sys.stderr, bar_format=BAR_FORMAT, dynamic_ncols=True)  # fmt: skip
