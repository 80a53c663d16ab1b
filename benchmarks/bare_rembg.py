"""The baseline: bare rembg.remove with one reused session in one process, no orchestrator.

Prints one JSON line: images, seconds, images per second, peak RSS in MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--images", type=Path, nargs="+", required=True)
    parser.add_argument("-n", type=int, default=16)
    args = parser.parse_args()

    # rembg only loads custom models from under its home: link the file there, as its docs say.
    home = Path(tempfile.mkdtemp(prefix="rembg-home-"))
    (home / "models").mkdir()
    link = home / "models" / args.model.name
    link.symlink_to(args.model.resolve())
    os.environ["REMBG_HOME"] = str(home)
    import rembg

    session = rembg.new_session("dis_custom", model_path=str(link))
    inputs = [p.read_bytes() for p in args.images]
    rembg.remove(inputs[0], session=session)  # warm-up, as the worker warms at start
    started = time.perf_counter()
    for i in range(args.n):
        out = rembg.remove(inputs[i % len(inputs)], session=session)
        assert isinstance(out, bytes) and out[:4] == b"\x89PNG"
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump(
        {"images": args.n, "seconds": seconds, "ips": args.n / seconds, "peak_rss_mib": peak_mib},
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
