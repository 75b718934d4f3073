"""Starting N training processes per machine through torchrun's machinery (torch.distributed's
elastic agent and rendezvous: `elastic_launch`), never a fan-out of our own.

- One machine: a c10d rendezvous on localhost port 0 (the OS picks a free port), as
  `torchrun --standalone`.
- Several machines: the static rendezvous at HOST:PORT (the machine with node rank 0 listens
  there); every machine runs the same command with its own `--node-rank`.
- Threads: one OpenMP budget per machine — `threads` (the recipe's measure.threads), else every core
  this process may use — split evenly across its local processes (at least 1 each), through
  OMP_NUM_THREADS, which torchrun's agent passes on.
- Failure: no restarts. When a process dies the agent stops the others on its machine at once;
  processes on other machines fail at their next collective (a broken connection, at the latest
  after `timeout`). Either way the launcher raises one `RankFailedError` line naming the rank.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from frugalml.errors import ConfigError, FrugalError


class RankFailedError(FrugalError):
    """A training process died or failed; the others were stopped."""

    exit_code = 1


def threads_per_process(nproc: int, threads: int | None = None) -> int:
    budget = threads or len(os.sched_getaffinity(0))
    return max(1, budget // nproc)


def launch(entrypoint: Callable | str, args: list[Any], *, nproc: int, nnodes: int = 1, node_rank: int = 0,
           rdzv_endpoint: str | None = None, run_id: str | None = None, threads: int | None = None,
           timeout: float = 900.0, hint: str = "") -> dict[int, Any]:
    """Run `entrypoint(*args)` (a function, or a program such as sys.executable) in `nproc` processes
    on this machine (`nnodes` machines in all). Returns {local rank: return value} for functions."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nnodes > 1 and not rdzv_endpoint:
        raise FrugalError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT (the machine with --node-rank 0)")
    if nnodes > 1 and not 0 <= node_rank < nnodes:
        raise FrugalError(f"--node-rank {node_rank}: must be between 0 and {nnodes - 1}")
    if nnodes == 1:
        backend, endpoint, configs = "c10d", "localhost:0", {"timeout": int(timeout)}
    else:
        backend, endpoint, configs = "static", str(rdzv_endpoint), {"rank": node_rank, "timeout": int(timeout)}
    config = LaunchConfig(
        min_nodes=nnodes, max_nodes=nnodes, nproc_per_node=nproc, run_id=run_id or str(uuid.uuid4()),
        rdzv_backend=backend, rdzv_endpoint=endpoint, rdzv_configs=configs, max_restarts=0,
        monitor_interval=0.1, start_method="spawn",
    )
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "GLOO_SOCKET_IFNAME")}
    os.environ["OMP_NUM_THREADS"] = str(threads_per_process(nproc, threads))
    if nnodes == 1 and saved["GLOO_SOCKET_IFNAME"] is None and "lo" in {n for _, n in socket.if_nameindex()}:
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"  # one machine: gloo talks over loopback
    try:
        return elastic_launch(config, entrypoint)(*args)
    except ChildFailedError as e:
        rank, failure = _root_cause(e.failures)
        others = sorted(r for r in e.failures if r != rank)
        also = f" (then rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))} failed too)" if others else ""
        err = RankFailedError(f"rank {rank} {_what(failure)}{also}; the other processes were stopped{hint}")
        if failure.exitcode == FrugalError.exit_code:
            err.exit_code = FrugalError.exit_code  # a user error in the recipe: the CLI exits as for one process
        raise err from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_batch_sizes(recipe: dict, procs: int) -> None:
    """Every training batch size of a dumped recipe (its `train:` and every stage's override) is
    global and must divide by the processes: said once, before any process starts."""
    for key, size in _batch_sizes(recipe):
        if size % procs:
            raise ConfigError(f"{key}: {size} is the global batch and must divide by the {procs} processes; "
                              f"use a multiple of {procs}")


def _batch_sizes(node: object, path: str = "") -> list[tuple[str, int]]:
    if isinstance(node, dict):
        found = [(f"{path}batch_size", node["batch_size"])] if isinstance(node.get("batch_size"), int) else []
        return found + [hit for k, v in node.items() for hit in _batch_sizes(v, f"{path}{k}.")]
    if isinstance(node, list):
        return [hit for i, v in enumerate(node) for hit in _batch_sizes(v, f"{path}{i}.")]
    return []


def _root_cause(failures: dict[int, Any]) -> tuple[int, Any]:
    """A process killed by a signal other than the agent's SIGTERM comes first (the others then
    fail at their next collective), SIGABRT last among signals: it is how a peer's collective gives
    up when the connection resets (gloo), and the agent may record that abort before the kill that
    caused it; otherwise the earliest failure."""
    def order(item: tuple[int, Any]) -> tuple[int, float, int]:
        rank, f = item
        killed = f.exitcode < 0 and f.signal_name() != "SIGTERM"
        tier = 2 if not killed else 1 if f.signal_name() == "SIGABRT" else 0
        return (tier, f.timestamp, rank)

    return min(failures.items(), key=order)


def _what(failure: Any) -> str:
    where = f"(local rank {failure.local_rank}, pid {failure.pid})"
    if failure.exitcode < 0:
        return f"{where} was killed by {failure.signal_name()}"
    if failure.exitcode == FrugalError.exit_code:
        return f"{where} stopped with the error printed above (exit code {failure.exitcode})"
    message = failure.message if isinstance(failure.message, str) else str(failure.message)
    last = next((ln.strip() for ln in reversed(message.splitlines()) if ln.strip()), "")
    detail = f": {last}" if last and "pytorch.org/docs" not in last else ""
    return f"{where} failed with exit code {failure.exitcode}{detail}"
