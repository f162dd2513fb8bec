#!/usr/bin/env python3
"""Groups a heaptrack profile's peak memory by the innermost frame of a named crate.

    BENCH_DHT_IN_NETNS=1 heaptrack -o /tmp/heap target/release/bench-dht --nodes 100 \
        --digests-per-node 5 --lookups 30 --memory
    heaptrack_print -f /tmp/heap.zst -F /tmp/peak.folded --flamegraph-cost-type peak
    scripts/heap-peak-by-frame.py /tmp/peak.folded

Each line of the folded file is `frame;frame;...;frame bytes` (outermost first). The bytes
of a stack count for the innermost frame that belongs to one of CRATES (allocator and
container frames are skipped), so the table says which libp2p part holds the memory.
"""

import collections
import re
import sys

CRATES = r"(yamux|libp2p_[a-z_]+|snow|asynchronous_codec|spegel_[a-z_]+|quick_protobuf[a-z_]*|multistream_select|futures_[a-z_]+)"
SKIP = {"futures_util", "futures_channel", "futures_core", "futures_io"}


def main(path: str, top: int = 20) -> None:
    total = 0
    by_frame: collections.Counter = collections.Counter()
    for line in open(path, encoding="utf-8", errors="replace"):
        stack, _, count = line.rstrip().rpartition(" ")
        if not count.isdigit():
            continue
        total += int(count)
        owner = "(no named crate)"
        for frame in reversed(stack.split(";")):
            match = re.search(CRATES, frame)
            if match and match.group(1) not in SKIP:
                owner = re.sub(r"::h[0-9a-f]{16}", "", frame)[:140]
                break
        by_frame[owner] += int(count)
    print(f"peak heap: {total / 1e6:.1f} MB")
    for owner, count in by_frame.most_common(top):
        print(f"{count / 1e6:8.1f} MB  {count / total:5.1%}  {owner}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20)
