#!/usr/bin/env python3
"""Expected routing-table walks per second during a bench-dht run, from its progress lines.

Usage: scripts/walk-density.py [--interval SECONDS] PROGRESS.txt...

bench-dht prints "N nodes up after Ts" every 50 nodes while joining, then "joined in",
"announced in". Each router walks the DHT again every U(3/4, 5/4) x the walk interval
(`--bootstrap-interval`, the router's `next_walk_in`) after it joined. This script places each
node's join on those lines (linear in between), draws its walk times (20 draws per node, fixed
seed) and prints the walks per second over the announce phase and over the 120 s after the
lookups started. It is a model of when the walks fell, not a measurement of them.
"""

import argparse
import random
import re


def join_times(lines, nodes):
    """Each node's join time, interpolated between the progress lines."""
    points = [(0, 0.0)]
    for line in lines:
        m = re.match(r"(\d+) nodes up after (\d+)s", line)
        if m:
            points.append((int(m.group(1)), float(m.group(2))))
    times = []
    for n in range(nodes):
        for (a, ta), (b, tb) in zip(points, points[1:]):
            if a <= n < b:
                times.append(ta + (tb - ta) * (n - a) / (b - a))
                break
        else:
            times.append(points[-1][1])
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=1800.0, help="walk interval, s")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("progress", nargs="+")
    args = parser.parse_args()
    draws = 20
    for path in args.progress:
        with open(path) as f:
            text = f.read()
        joined = re.search(r"joined in ([\d.]+)s", text)
        announced = re.search(r"announced in ([\d.]+)s", text)
        if not joined or not announced:
            print(f"{path}: no 'joined in' or 'announced in' line, skipped")
            continue
        join_s, announce_s = float(joined.group(1)), float(announced.group(1))
        lookups_at = join_s + announce_s
        rng = random.Random(1)
        walks = []
        for joined_at in join_times(text.splitlines(), args.nodes):
            for _ in range(draws):
                t = joined_at
                while t < lookups_at + 120:
                    t += rng.uniform(0.75, 1.25) * args.interval
                    walks.append(t)
        during_announce = sum(join_s <= t < lookups_at for t in walks) / draws / announce_s
        at_lookups = sum(lookups_at <= t < lookups_at + 120 for t in walks) / draws / 120
        print(
            f"{path}: joined {join_s:.0f} s, announced {announce_s:.0f} s; walks/s over the "
            f"announce phase {during_announce:.2f}, in the 120 s after the lookups started "
            f"{at_lookups:.2f}"
        )


if __name__ == "__main__":
    main()
