#!/usr/bin/env python3
"""Ray benchmark: items/s between two Ray nodes through ``auto``, ``ray_queue``
and ``ray_actor``, and the cost of ``auto`` over ``SageQueue`` on one node.

Cross-node: a two-node cluster on this machine (``ray.cluster_utils.Cluster``);
a producer actor on the second node, started with another
``SAGE_QUEUE_HOST_ID`` (so for it the queue is on another machine), puts N
items whose pickles are 512 bytes; this driver, on the head node, gets them
(``get_many``). The clock runs from the producer's start to the last item
received. Each queue type is measured with the producer calling ``put`` per
item (what the issue compares: ``auto`` >= 50x ``ray_queue``) and with
``put_many`` batches of BATCH (one Ray call each).

One node: ``put`` then ``get`` of the same items in one process, through a
plain ``SageQueue`` and through the ``auto`` descriptor resolved on its own
machine (which is a SageQueue): the ratio should be 1.

Run: make bench-ray (part of make bench), or
RING_BUFFER_LIB=build/libring_buffer.so .venv/bin/python bench/bench_ray.py [--items N]
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python-ctypes"))
# Ray workers import this file's actor class and the package from here.
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(ROOT / "python-ctypes"), str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")]))

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from sage_queue import SageQueue, destroy_queue  # noqa: E402
from sage_queue.descriptor import QueueDescriptor, resolve_descriptor  # noqa: E402
from sage_queue.ray_support import destroy_ray_queue  # noqa: E402
from sage_queue.transport_auto import destroy_auto_queue  # noqa: E402

PAYLOAD = b"x" * 494  # pickle.dumps(PAYLOAD, HIGHEST_PROTOCOL) is 512 bytes
assert len(pickle.dumps(PAYLOAD, pickle.HIGHEST_PROTOCOL)) == 512
BATCH = 256
OTHER_HOST = "bench-second-node"
STORE = 100 * 1024 * 1024


@ray.remote(num_cpus=0)
class Producer:
    """On the second node: resolves the descriptor and puts ``n`` items."""

    def __init__(self, desc_json: str) -> None:
        self.q: Any = resolve_descriptor(desc_json)

    def kind(self) -> str:
        return type(self.q).__name__

    def run(self, n: int, batch: int) -> float:
        t0 = time.monotonic()
        if batch:
            for start in range(0, n, batch):
                self.q.put_many([PAYLOAD] * min(batch, n - start))
        else:
            put = self.q.put
            for _ in range(n):
                put(PAYLOAD)
        getattr(self.q, "flush", lambda: None)()
        return t0


def describe(queue_type: str, tag: str) -> QueueDescriptor:
    queue_id = f"bench_ray_{os.getpid()}_{tag}"
    if queue_type == "auto":
        return QueueDescriptor.create_auto_queue(queue_id, 4 << 20)  # batch_size: the default (512)
    if queue_type == "ray_queue":
        return QueueDescriptor.create_ray_queue(queue_id, maxsize=0)
    return QueueDescriptor.create_ray_actor_queue(queue_id, f"holder_{queue_id}", maxsize=0)


def destroy(desc: QueueDescriptor) -> None:
    if desc.queue_type == "auto":
        destroy_auto_queue(desc)
    else:
        destroy_ray_queue(desc, kill_actor=True)


def cross_node(queue_type: str, n: int, batch: int, second_node: str, tag: str) -> float:
    """Items/s from a second-node producer to this driver."""
    desc = describe(queue_type, tag)
    try:
        consumer: Any = resolve_descriptor(desc)
        producer = Producer.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(second_node, soft=False),
            runtime_env={"env_vars": {"SAGE_QUEUE_HOST_ID": OTHER_HOST}},
        ).remote(desc.to_json())  # type: ignore[attr-defined]
        kind = ray.get(producer.kind.remote())
        if queue_type == "auto" and kind != "RemoteAutoQueue":
            raise SystemExit(f"the producer resolved auto to {kind}, not the remote endpoint")
        started = producer.run.remote(n, batch)
        got = 0
        while got < n:
            items = consumer.get_many(4096, timeout=600)
            if any(item != PAYLOAD for item in items):
                raise SystemExit("a corrupted item arrived")
            got += len(items)
        t1 = time.monotonic()
        t0 = ray.get(started)  # same machine: one monotonic clock
        if got != n:
            raise SystemExit(f"{queue_type}: got {got} of {n}")
        ray.kill(producer)
        getattr(consumer, "close", lambda: None)()
        return n / (t1 - t0)
    finally:
        destroy(desc)


def one_node(n: int) -> Tuple[float, float]:
    """(put+get pairs/s through SageQueue, through auto resolved here)."""
    name = f"bench_ray_{os.getpid()}_local"
    plain = SageQueue(name, 4 << 20)
    desc = QueueDescriptor.create_auto_queue(f"bench_ray_{os.getpid()}_auto", 4 << 20)
    auto: Any = resolve_descriptor(desc)
    try:
        if not isinstance(auto, SageQueue):
            raise SystemExit(f"auto resolved to {type(auto).__name__} on its own machine")
        rates: Dict[str, float] = {}
        for _ in range(3):
            for label, q in (("SageQueue", plain), ("auto", auto)):
                t0 = time.perf_counter()
                for _ in range(n // 1000):
                    for _ in range(1000):
                        q.put(PAYLOAD)
                    for _ in range(1000):
                        q.get()
                rates[label] = max(rates.get(label, 0.0), n / (time.perf_counter() - t0))
        return rates["SageQueue"], rates["auto"]
    finally:
        plain.destroy()
        auto.close()
        destroy_auto_queue(desc)
        destroy_queue(name)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="items per auto and batched run")
    parser.add_argument("--slow-items", type=int, default=2_000, help="items per put-per-item Ray run")
    args = parser.parse_args(argv)

    print(f"Ray benchmark: 512-byte pickles; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE,
                                                            "include_dashboard": False})
    try:
        second = cluster.add_node(num_cpus=1, object_store_memory=STORE)
        ray.init(address=cluster.address, namespace=f"bench_ray_{os.getpid()}", logging_level=logging.WARNING)
        cluster.wait_for_nodes()
        runs: List[Tuple[str, str, int, int]] = [
            ("auto, put per item", "auto", args.items, 0),
            (f"auto, put_many ({BATCH})", "auto", args.items, BATCH),
            ("ray_queue, put per item", "ray_queue", args.slow_items, 0),
            (f"ray_queue, put_many ({BATCH})", "ray_queue", args.items, BATCH),
            ("ray_actor, put per item", "ray_actor", args.slow_items, 0),
            (f"ray_actor, put_many ({BATCH})", "ray_actor", args.items, BATCH),
        ]
        rates: Dict[str, float] = {}
        print("second node -> head node (producer actor on the second node, this driver gets with get_many):")
        for i, (label, queue_type, n, batch) in enumerate(runs):
            rates[label] = cross_node(queue_type, n, batch, second.node_id, str(i))
            print(f"  {label:<34} {n:>9,} items {rates[label]:>12,.0f} items/s", flush=True)
        local_rate, auto_rate = one_node(200_000)
    finally:
        ray.shutdown()
        cluster.shutdown()
    ratio = rates["auto, put per item"] / rates["ray_queue, put per item"]
    print()
    print("one node, put then get in one process (best of 3):")
    print(f"  SageQueue {local_rate:>12,.0f} pairs/s   auto (resolved here) {auto_rate:>12,.0f} pairs/s   "
          f"ratio {auto_rate / local_rate:.2f}")
    print()
    print("targets (issue 15):")
    print(f"  auto >= 50x ray_queue across nodes (put per item):  {ratio:7.1f}x  {'met' if ratio >= 50 else 'MISSED'}")
    same = auto_rate / local_rate
    print(f"  auto costs nothing over SageQueue on one node:      {same:7.2f}   "
          f"{'met' if same >= 0.95 else 'MISSED'} (>= 0.95: the same object, timing noise aside)")
    print(f"(load average now {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
