"""Draws the C benchmark's 1 -> 1 throughput against message size.

Reads the CSV that ``bench/bench.c`` writes when ``RB_BENCH_CSV`` is set
(``make bench-c`` does) and writes a PNG: messages/s and MB/s against message
size, for libring_buffer's put_msg/get_msg, the reference lock-free ring and
(where it was measured) Boost.Interprocess message_queue, pinned and not.

    python bench/plot_bench_c.py build/bench/bench_c.csv docs/bench_c.png
"""

import argparse
import csv
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

Series = Dict[Tuple[str, bool], List[Tuple[int, float]]]



def read_one_to_one(path: Path) -> Series:
    series: Series = defaultdict(list)
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row["section"] != "sizes":  # the 1 -> 1 table of message sizes
                continue
            rate = float(row["messages_per_s"])
            if rate > 0:  # 0: a run that did not deliver exactly (reported by the benchmark)
                series[(row["implementation"], row["pinned"] == "1")].append((int(row["size"]), rate))
    for points in series.values():
        points.sort()
    return series


def plot(series: Series, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate_ax, bytes_ax) = plt.subplots(1, 2, figsize=(11, 4.8), dpi=110)
    order = {"put_msg/get_msg": 0, "reference ring": 1, "Boost mq": 2}
    for (impl, pinned), points in sorted(series.items(), key=lambda kv: (order.get(kv[0][0], 3), not kv[0][1])):
        sizes = [s for s, _ in points]
        label = f"{impl}, {'pinned' if pinned else 'not pinned'}"
        style = dict(color=f"C{order.get(impl, 3)}", marker="o" if pinned else "s",
                     linestyle="-" if pinned else "--", linewidth=2.4 if impl.startswith("put_msg") else 1.4)
        rate_ax.plot(sizes, [r / 1e6 for _, r in points], label=label, **style)
        bytes_ax.plot(sizes, [s * r / 1e6 for s, r in points], label=label, **style)
    for ax, ylabel in ((rate_ax, "M messages/s"), (bytes_ax, "MB/s of payload")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("message size (bytes)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    rate_ax.legend(fontsize=7)
    fig.suptitle("libring_buffer 1 -> 1 process, 1 MiB ring, against a lock-free SPSC ring "
                 "(medians of one `make bench-c` run)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    print(f"plot written to {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path)
    parser.add_argument("png", type=Path)
    args = parser.parse_args()
    series = read_one_to_one(args.csv)
    if not series:
        raise SystemExit(f"{args.csv}: no rows of the 1 -> 1 table of message sizes")
    plot(series, args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
