"""Starting or joining Ray the way interplay needs it: workers at normal priority, a small object store.

`ensure_ray(address)` joins the cluster at `address` (or `"auto"`), or starts a local instance when
`address` is None; it is idempotent. Ray's default worker niceness (15) would let any busy process on
the machine starve the 200 ms clock, so it is set to 0 before Ray starts.

`advertised(bound, advertise_host)`: the address a server publishes to others ("host:port"). A server
that binds every interface (0.0.0.0, ::) cannot publish that: it publishes `advertise_host` when given,
else this node's IP as Ray knows it (`ray.util.get_node_ip_address()`), so a multi-node cluster can
reach it; a server bound to one address publishes that address.
"""

from __future__ import annotations

import logging
import os
import sys

from interplay.log import get_logger

log = get_logger("interplay.raylocal")

OBJECT_STORE_BYTES = 80 * 1024 * 1024  # the runtime passes small protobufs and handles, not tensors


def ensure_ray(address: str | None = None, num_cpus: int | None = None, namespace: str = "interplay",
               log_to_driver: bool = False) -> dict:
    """Start or join Ray once per process; returns `ray.get_runtime_context()` facts for logging.

    `log_to_driver`: the actors' log lines also print on this process's stderr (what `serve` wants;
    the demo keeps its console for the timeline)."""
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if log_to_driver and not sys.stderr.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")  # no colour codes around the actors' lines in a log file
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, namespace=namespace, log_to_driver=log_to_driver)
        else:
            # A local cluster turns token authentication on when its mode is unset and warns at every
            # start that it did so; the protection is what we want, the warning is noise.
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            # address="local": always a fresh instance of our own; without it Ray would attach to any
            # cluster already running on this machine and refuse the resource arguments.
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 2,
                     object_store_memory=OBJECT_STORE_BYTES,
                     include_dashboard=False, log_to_driver=log_to_driver, namespace=namespace)
    ctx = ray.get_runtime_context()
    facts = {"node_id": ctx.get_node_id(), "namespace": namespace, "address": address or "local"}
    log.info("ray_ready", **facts)
    return facts


BIND_ALL = ("0.0.0.0", "::", "[::]", "")


def node_ip() -> str:
    """This node's IP as Ray publishes it (Ray's own guess when Ray is not running here)."""
    import ray.util

    return ray.util.get_node_ip_address()


def advertised(bound: str, advertise_host: str | None = None) -> str:
    """The "host:port" others should dial for a server bound at `bound` (see the module docstring)."""
    host, _, port = bound.rpartition(":")
    if advertise_host:
        return f"{advertise_host}:{port}"
    if host in BIND_ALL:
        return f"{node_ip()}:{port}"
    return bound
