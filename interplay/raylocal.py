"""Starting or joining Ray the way interplay needs it: workers at normal priority, a small object store.

`ensure_ray(address)` joins the cluster at `address` (or `"auto"`), or starts a local instance when
`address` is None; it is idempotent. Ray's default worker niceness (15) would let any busy process on
the machine starve the 200 ms clock, so it is set to 0 before Ray starts.
"""

from __future__ import annotations

import os

from interplay.log import get_logger

log = get_logger("interplay.raylocal")

OBJECT_STORE_BYTES = 80 * 1024 * 1024  # the runtime passes small protobufs and handles, not tensors


def ensure_ray(address: str | None = None, num_cpus: int | None = None, namespace: str = "interplay") -> dict:
    """Start or join Ray once per process; returns `ray.get_runtime_context()` facts for logging."""
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, namespace=namespace, log_to_driver=False)
        else:
            # address="local": always a fresh instance of our own; without it Ray would attach to any
            # cluster already running on this machine and refuse the resource arguments.
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 2,
                     object_store_memory=OBJECT_STORE_BYTES,
                     include_dashboard=False, log_to_driver=False, namespace=namespace)
    ctx = ray.get_runtime_context()
    facts = {"node_id": ctx.get_node_id(), "namespace": namespace, "address": address or "local"}
    log.info("ray_ready", **facts)
    return facts
