"""A repair on a ``distributed.Client`` that the driver and the workers both need.

The driver gathers trial results through its client and each worker fetches
the search's payload through its own; either gather can be cancelled (Ctrl-C,
or the timeout of ``result(timeout=...)``) and leave the client broken for the
next one (dask/distributed#8514).
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("scanpy_autotune")


def clear_stale_gather(client: Any) -> None:
    """Undo the state a cancelled gather can leave in a ``distributed.Client``.

    A gather cancelled in a narrow window (Ctrl-C during ``future.result()``,
    or the timeout of ``result(timeout=...)``) leaves the client's shared
    ``_gather_future`` set to a cancelled future. Every later gather of that
    client awaits it and fails with ``UnboundLocalError: cannot access local
    variable 'result'`` (dask/distributed#8514). A done future left there is
    always stale (a live gather clears it as it starts), so it is dropped.
    """
    pending = getattr(client, "_gather_future", None)
    if pending is not None and pending.done():
        logger.debug("dask: dropping the client's stale gather (dask/distributed#8514)")
        client._gather_future = None
