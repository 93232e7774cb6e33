"""Total cost per request as CPU instructions, delivery included, counted by valgrind.

``bench_total.py`` measures process CPU time, which on a shared virtual machine wanders
by a third from one hour to the next (the bare app alone: 630 to 850 µs per request in one
afternoon). Instruction counts do not wander. This runs exactly ``bench_total.py``'s
measuring process (same apps, variants, capture endpoint in another process, waiting
until delivery is complete) under ``valgrind --tool=callgrind``, which counts the
instructions of every thread of the process, twice per variant: with ``--small`` and with
``--large`` timed requests. The difference divided by the difference in requests is what
one request costs the process, start-up and warm-up excluded.

Under valgrind the process runs about 50 times slower, so time-based flushes (apiusage's
``flush_interval``, the posthog SDK's) would send batches far smaller than the same
traffic does natively, where a busy process fills every batch by size (100 events): the
cost per request would then depend on how busy the machine is (measured: +151k to +332k
instructions for the same code). For the same reason Python's 5 ms GIL switch interval
would hand the GIL between the worker and the request thread about 50 times more often
per request than natively. ``--time-scale`` (default 100) slows all of these alike, so
batches fill by size and threads switch about as often per request as they do natively.

What instructions miss: cache misses, system calls and the price of handing the GIL from
one thread to another, all of which CPU time includes. Read both.

    python benchmarks/total_instructions.py                        # about 10 minutes
    python benchmarks/total_instructions.py --frameworks flask --variants bare,apiusage-posthog

Needs valgrind (``apt-get install valgrind``). Two processes run at a time.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_total  # a sibling script, not a package

VARIANTS = ("bare", "apiusage-posthog", "apiusage-store", "posthog-capture")
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def count(spec: bench_total.RunSpec, workdir: Path) -> int:
    """Instructions of one measuring process, all threads, from start to exit."""
    rundir = Path(tempfile.mkdtemp(prefix=f"{spec.framework}-{spec.variant}-", dir=workdir))
    store = rundir / "events.sqlite3"
    if spec.variant == "apiusage-store":
        spec = bench_total.RunSpec(**{**asdict(spec), "store": str(store)})
    completed = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={rundir / 'callgrind.out'}",
            sys.executable,
            str(Path(bench_total.__file__).resolve()),
            "--child",
            json.dumps(asdict(spec)),
        ],
        cwd=rundir,
        env=bench_total.child_environment(spec.variant, spec.capture_url, store),
        capture_output=True,
        text=True,
        timeout=3600,
    )
    found = _COLLECTED.search(completed.stderr)
    if completed.returncode != 0 or found is None:
        raise RuntimeError(f"{spec.framework} {spec.variant}: {completed.stderr[-2000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    # Two processes share the endpoint, so its counts mix theirs: apiusage's own counters
    # say whether anything was dropped.
    if (result.get("stats") or {}).get("dropped", 0) or not result["flush_ok"]:
        raise RuntimeError(f"{spec.framework} {spec.variant}: events were lost: {result}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frameworks", default="fastapi,flask")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--small", type=int, default=100, help="timed requests, first run")
    parser.add_argument("--large", type=int, default=400, help="timed requests, second run")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=100.0,
        help="slow time-based flushes and the GIL switch interval down by this factor, as "
        "valgrind slows the process (batches then fill by size and threads switch as "
        "often per request as natively); 1 to keep them",
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian/Ubuntu: apt-get install valgrind)")
        return 2
    frameworks = args.frameworks.split(",")
    variants = args.variants.split(",")
    if "bare" not in variants:
        variants.insert(0, "bare")
    with tempfile.TemporaryDirectory(prefix="apiusage-instructions-") as tmp:
        workdir = Path(tmp)
        endpoint = bench_total.CaptureEndpoint(workdir)
        try:
            jobs = {
                (framework, variant, requests): bench_total.RunSpec(
                    framework=framework,
                    variant=variant,
                    requests=requests,
                    warmup=50,
                    capture_url=endpoint.url,
                    time_scale=args.time_scale,
                )
                for framework in frameworks
                for variant in variants
                for requests in (args.small, args.large)
            }
            with ThreadPoolExecutor(2) as pool:
                futures = {key: pool.submit(count, spec, workdir) for key, spec in jobs.items()}
                counts = {key: future.result() for key, future in futures.items()}
        finally:
            endpoint.stop()
    print(
        "instructions per request (all threads, delivery included), "
        f"valgrind {args.small}/{args.large} requests"
    )
    for framework in frameworks:
        per_request = {
            variant: (
                counts[framework, variant, args.large] - counts[framework, variant, args.small]
            )
            / (args.large - args.small)
            for variant in variants
        }
        bare = per_request["bare"]
        capture = per_request.get("posthog-capture")
        print(f"\n{framework}")
        header = ("variant", "instr/req", "added", "added/bare", "added/capture")
        print("{:<20} {:>11} {:>10} {:>11} {:>14}".format(*header))
        for variant, value in per_request.items():
            added = value - bare
            versus_capture = (
                f"{added / (capture - bare):14.2f}"
                if capture is not None and variant not in ("bare", "posthog-capture")
                else f"{'':>14}"
            )
            print(
                f"{variant:<20} {value:11,.0f} {added:+10,.0f} "
                f"{(added / bare if variant != 'bare' else 0):11.2f} {versus_capture}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
