"""What the driver asks of a Dask cluster besides its trials.

Reaching it (:func:`import_distributed`, a bounded :func:`handshake` before a
``distributed.Client`` is made), reading its workers (:func:`workers_info`),
and the housekeeping around a search: removing what killed drivers left
(:func:`remove_orphans`), naming workers whose declared GPU torch cannot see
(:func:`warn_blind_gpus`), and pausing the workers' profilers for the search
(:func:`pause_workers`, :func:`resume_workers`). Each takes the driver's
client; the housekeeping is best effort and never stops a search.

``distributed`` and :mod:`._worker` (which needs it) are imported inside the
functions, so importing this module works without ``distributed``.
"""

from __future__ import annotations

import logging
from typing import Any

from ._protocol import payload_owner

logger = logging.getLogger("scanpy_autotune")

EXTRA_HINT = 'install the "dask" extra (in a clone of scanpy-autotune: pip install -e ".[dask]")'


def import_distributed() -> Any:
    """Import ``distributed``, or fail with the name of the extra that installs it.

    Raises
    ------
    ImportError
        When ``distributed`` is not installed.
    """
    try:
        import distributed
    except ImportError as err:
        raise ImportError(
            "backend='dask' needs the optional dependency 'distributed' (Dask): "
            f"{EXTRA_HINT}"
        ) from err
    return distributed


def handshake(address: str) -> None:
    """Connect to ``address`` and exchange Dask's handshake, within the connect timeout.

    ``distributed.Client`` waits without end for the handshake of a server
    that accepts the connection but never answers (a dashboard's or another
    HTTP port); this bounded probe fails instead. It runs its own event loop
    in a thread, so it also works inside a notebook's running loop.

    Raises
    ------
    Exception
        ``TimeoutError`` when nothing answers, ``OSError`` when the connection
        fails, or whatever the server's reply raised.
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import dask
    from dask.utils import parse_timedelta
    from distributed.comm import connect
    from distributed.security import Security

    timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="s")
    arguments = Security().get_connection_args("client")

    async def exchange() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=timeout, **arguments), timeout)
        await comm.close()

    with ThreadPoolExecutor(1) as pool:
        try:
            pool.submit(asyncio.run, exchange()).result()
        except TimeoutError:
            raise TimeoutError(f"no Dask handshake within {timeout:.0f} s") from None


def workers_info(client: Any) -> dict:
    """Address -> info (``nthreads``, ``resources``) of every worker of the cluster."""
    try:
        info = client.scheduler_info(n_workers=-1)  # newer distributed lists 5 by default
    except TypeError:  # older distributed lists all of them and has no n_workers
        info = client.scheduler_info()
    return info["workers"]


def _connected_clients(dask_scheduler: Any) -> list[str]:
    """The ids of the clients connected to the scheduler (``client.run_on_scheduler``)."""
    return list(dask_scheduler.clients)


def remove_orphans(client: Any) -> None:
    """Remove the data that searches whose driver is gone (killed) left on the cluster.

    A driver that ends normally unpublishes its payload and has the workers
    forget its context (:meth:`._driver.DaskBackend.shutdown`); one that was
    killed cannot, and on a long-lived cluster its published payload would
    hold memory there for good. A payload's name carries its driver's client
    id (:attr:`._protocol.SearchRef.dataset`); one whose driver is no longer
    connected to the scheduler is removed.
    """
    from ._worker import forget_context

    try:
        owners = {name: payload_owner(name) for name in client.list_datasets()}
        owners = {name: owner for name, owner in owners.items() if owner is not None}
        if not owners:
            return
        connected = set(client.run_on_scheduler(_connected_clients))
        for name, (search_id, driver) in owners.items():
            if driver in connected:
                continue  # a search running now, from this process or another
            client.unpublish_dataset(name)
            client.run(forget_context, search_id)
            logger.info(
                "dask: removed the data of search %s, left on the cluster by a driver "
                "that is gone (%s)", search_id, driver,
            )
    except Exception as err:  # noqa: BLE001 - never stop a search for a clean-up
        logger.debug("dask: could not look for data left by earlier searches: %s", err)


def warn_blind_gpus(client: Any) -> None:
    """Warn about workers that declare a ``GPU`` resource but on which torch sees no GPU."""
    from ._worker import cuda_visible

    declared = {
        address for address, info in workers_info(client).items()
        if float(info.get("resources", {}).get("GPU", 0)) > 0
    }
    if not declared:
        return
    try:
        visible = client.run(cuda_visible, workers=sorted(declared))
    except Exception as err:  # noqa: BLE001 - a worker that left meanwhile
        logger.debug("dask: could not ask the workers for their GPUs: %s", err)
        return
    blind = sorted(address for address in declared if visible.get(address) is False)
    if blind:
        logger.warning(
            "dask: %d worker(s) declare a GPU resource but torch sees no CUDA device there "
            "(%s); their trials run on the CPU, one per GPU unit", len(blind), ", ".join(blind),
        )


def pause_workers(client: Any) -> dict[str, list[str]]:
    """Pause the workers' :data:`._worker.PAUSED_CALLBACKS` for a search.

    Returns
    -------
    dict
        Worker address -> the callbacks paused there, for :func:`resume_workers`.
    """
    from ._worker import pause_callbacks

    try:
        paused = client.run(pause_callbacks)
    except Exception as err:  # a worker without them, or one that left meanwhile
        logger.debug("dask: could not pause the workers' profilers: %s", err)
        return {}
    paused = {address: names for address, names in paused.items() if names}
    if paused:
        names = sorted({name for names in paused.values() for name in names})
        logger.debug("dask: paused %s on %d worker(s)", ", ".join(names), len(paused))
    return paused


def resume_workers(client: Any, paused: dict[str, list[str]]) -> None:
    """Restart the callbacks :func:`pause_workers` paused, on the workers still there."""
    from ._worker import resume_callbacks

    alive = set(workers_info(client))
    workers = [address for address in paused if address in alive]
    if workers:
        client.run(resume_callbacks, paused, workers=workers)
