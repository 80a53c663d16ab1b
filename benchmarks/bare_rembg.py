"""The baselines: bare rembg, no orchestrator — one process of ``benchmarks/local_pipeline.py``.

    python benchmarks/bare_rembg.py --model M --images a.png b.png -n 24 [--threads 2]
                                    [--shard 0/1] [--mode remove|ceiling] [--out DIR]

``remove``: ``rembg.remove(bytes, session=…)`` → PNG bytes with one reused ``dis_custom`` session
(rembg's defaults otherwise), on images ``shard, shard+K, …`` of the ``-n`` (the photos
repeated). ``ceiling``: only ``session.run`` on inputs pre-computed by rembg's own
``normalize``: what inference alone costs, the most any pipeline around it could reach.

The process loads and warms its session (one run, as a worker does at start), prints ``ready``,
waits for a line on stdin (so that the processes of one side start together), runs, and prints
one JSON line: images, seconds, images per second, CPU seconds (user + system, all threads),
peak RSS in MiB.
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


def cpu_seconds() -> float:
    """CPU time of every thread of this process (ONNX Runtime's included), user + system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--images", type=Path, nargs="+", required=True)
    parser.add_argument("-n", type=int, default=24, help="images of the whole side (all shards)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX intra-op threads; 0 = ORT's default")
    parser.add_argument("--shard", default="0/1", help="k/K: this process does images k, k+K, …")
    parser.add_argument("--mode", choices=("remove", "ceiling"), default="remove")
    parser.add_argument("--out", type=Path, help="write the outputs of the distinct photos here")
    args = parser.parse_args()
    shard, shards = map(int, args.shard.split("/"))

    # rembg only loads custom models from under its home: link the file there, as its docs say.
    home = Path(tempfile.mkdtemp(prefix="rembg-home-"))
    (home / "models").mkdir()
    link = home / "models" / args.model.name
    link.symlink_to(args.model.resolve())
    os.environ["REMBG_HOME"] = str(home)
    import onnxruntime as ort
    import rembg
    from PIL import Image

    opts = ort.SessionOptions()
    if args.threads:
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
    session = rembg.new_session("dis_custom", model_path=str(link), sess_opts=opts)
    blobs = [p.read_bytes() for p in args.images]
    mine = [i % len(blobs) for i in range(shard, args.n, shards)]

    if args.mode == "ceiling":
        import io

        feeds = [session.normalize(Image.open(io.BytesIO(b)), (0.5, 0.5, 0.5), (1.0, 1.0, 1.0),
                                   (1024, 1024)) for b in blobs]
        session.inner_session.run(None, feeds[0])  # warm-up: ONNX Runtime sizes its arena

        def one(i: int) -> None:
            session.inner_session.run(None, feeds[i])
    else:
        rembg.remove(blobs[0], session=session)  # warm-up, as the worker warms at start

        def one(i: int) -> None:
            out = rembg.remove(blobs[i], session=session)
            assert isinstance(out, bytes) and out[:4] == b"\x89PNG"

    if args.out is not None and args.mode == "remove":
        args.out.mkdir(parents=True, exist_ok=True)
        for path, blob in zip(args.images, blobs, strict=True):
            (args.out / f"{path.stem}.png").write_bytes(rembg.remove(blob, session=session))

    print("ready", flush=True)
    sys.stdin.readline()
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    for i in mine:
        one(i)
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu_before
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump({"images": len(mine), "seconds": seconds, "ips": len(mine) / seconds,
               "cpu_s": round(cpu, 3), "peak_rss_mib": round(peak_mib, 1)}, sys.stdout)
    print(flush=True)


if __name__ == "__main__":
    main()
