"""A/B of two builds of libring_buffer on a machine that changes speed.

Small shared machines run at a few speeds that last seconds each (on the
development VM the reference ring moved 64-byte messages at 4, 17 or 50 M/s
depending on the moment), so one run of `make bench-c` cannot show a 10 %
change. This runs the C benchmark's single comparison (``RB_BENCH_AB``:
reference ring, ours, reference ring) many times, alternating the two
library directories through ``LD_LIBRARY_PATH`` (the binary is built without
an rpath by ``make bench-ab``), drops the runs during which the reference
ring's rate moved by more than 25 % (the machine changed state meanwhile),
groups the others by the reference ring's rate (bands of a factor of 2), and
prints, per band, the median rate of each build, its ratio to the reference
and B/A.

    make bench-ab AB_A=<dir> AB_B=<dir> [AB_SIZE=64] [AB_RING=1048576] [AB_ROUNDS=30]

Each directory holds a ``libring_buffer.so.1`` (for instance a copy of
``build/`` made at each of two commits).
"""

import argparse
import math
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from typing import Dict, List, Tuple

AGREE = 0.25  # the two reference runs of one comparison may differ this much


def one(binary: str, lib: str, size: int, ring: int, seconds: float) -> Tuple[float, float, float]:
    env = dict(os.environ, LD_LIBRARY_PATH=lib, RB_BENCH_AB=f"{size}:{ring}", RB_BENCH_SECONDS=str(seconds))
    out = subprocess.run([binary], env=env, capture_output=True, text=True, check=True).stdout.split()
    if len(out) != 4 or out[0] != "ab":
        raise SystemExit(f"unexpected output of {binary}: {out}")
    ours, ref1, ref2 = (float(x) for x in out[1:])
    return ours, ref1, ref2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--a", required=True, help="directory of build A's libring_buffer.so.1")
    parser.add_argument("--b", required=True, help="directory of build B's libring_buffer.so.1")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--ring", type=int, default=1 << 20)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=0.1, help="RB_BENCH_SECONDS of each run")
    args = parser.parse_args()
    for lib in (args.a, args.b):
        if not os.path.exists(os.path.join(lib, "libring_buffer.so.1")):
            raise SystemExit(f"{lib}: no libring_buffer.so.1 there")

    # band (log2 of the reference rate in M/s) -> build -> [(ours, reference)]
    bands: Dict[int, Dict[str, List[Tuple[float, float]]]] = defaultdict(lambda: {"A": [], "B": []})
    dropped = 0
    for r in range(args.rounds):
        for build, lib in (("A", args.a), ("B", args.b)):
            ours, ref1, ref2 = one(args.binary, lib, args.size, args.ring, args.seconds)
            if min(ours, ref1, ref2) <= 0 or abs(ref1 - ref2) > AGREE * max(ref1, ref2):
                dropped += 1
                continue
            ref = (ref1 + ref2) / 2
            bands[int(math.floor(math.log2(ref / 1e6)))][build].append((ours, ref))
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr, end="\r", flush=True)
    print(file=sys.stderr)

    print(f"{args.size} B messages, ring {args.ring}, 1 -> 1 {args.rounds} rounds of A and B; "
          f"{dropped} runs dropped (the reference ring moved by more than {AGREE:.0%} during them)")
    print(f"{'reference M/s':>14} {'n A':>4} {'n B':>4} {'A M/s':>8} {'B M/s':>8} {'B/A':>6} {'A/ref':>6} {'B/ref':>6}")
    for band in sorted(bands):
        a, b = bands[band]["A"], bands[band]["B"]
        if not a or not b:
            continue
        ma, mb = statistics.median(o for o, _ in a), statistics.median(o for o, _ in b)
        ra, rb = statistics.median(o / f for o, f in a), statistics.median(o / f for o, f in b)
        print(f"{2 ** band:>6.0f} - {2 ** (band + 1):<5.0f} {len(a):>4} {len(b):>4} {ma / 1e6:>8.2f} {mb / 1e6:>8.2f} "
              f"{mb / ma:>5.2f}x {ra:>5.2f}x {rb:>5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
