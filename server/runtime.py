"""Settings of a long-running app process."""
from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Objects made while the app starts (modules, Dash's callback registry, the pages) live as
    long as the process. Frozen, they are no longer walked by each full run of the cyclic
    garbage collector, a pause of tens of milliseconds in the middle of a request otherwise."""
    gc.collect()
    gc.freeze()
