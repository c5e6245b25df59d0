"""Does the one-command run deliver? `clip-from-scratch pretrain`, defaults, timed end to end.

The course promises: on a laptop CPU the default run finishes within 3 minutes and names at
least 90% of the held-out colour x shape pairs right (chance: 1 in 30). This script runs the
real command in a fresh process (so imports, data drawing, BPE training and the final
evaluation all count), several times, and prints wall time, zero-shot top-1 and the machine's
load average, because on a shared machine the time says as much about the neighbours as
about the code.

    python benchmarks/bench_pretrain.py                 # 2 runs of the default command
    python benchmarks/bench_pretrain.py --repeats 3 -- --device cpu --seed 1
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

TIME_LIMIT_S = 180
MIN_TOP1 = 90.0


def run_once(extra):
    with tempfile.TemporaryDirectory() as out:
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "clip_from_scratch", "pretrain", "--out", out, "--no-progress",
                        *extra], check=True)
        wall = time.perf_counter() - started
        metrics = json.load(open(os.path.join(out, "metrics.json")))
        return dict(wall_s=round(wall, 1), train_s=metrics["train_seconds"], top1=round(metrics["zeroshot_top1"], 1),
                    chance=round(metrics["chance"], 1), load_before=round(load_before, 2),
                    load_after=round(os.getloadavg()[0], 2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="options passed on to `pretrain` (after --)")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {__import__('torch').get_num_threads()}")
    results = []
    for repeat in range(args.repeats):
        result = run_once(args.extra)
        results.append(result)
        verdict = "OK" if result["wall_s"] <= TIME_LIMIT_S and result["top1"] >= MIN_TOP1 else "MISSED"
        print(f"run {repeat + 1}: {result['wall_s']:.0f} s wall ({result['train_s']:.0f} s training), "
              f"zero-shot top-1 {result['top1']:.1f}% (chance {result['chance']:.1f}%), "
              f"load average {result['load_before']} -> {result['load_after']}  [{verdict}: "
              f"<= {TIME_LIMIT_S} s and >= {MIN_TOP1:.0f}%]")
    best = min(r["wall_s"] for r in results)
    print(f"fastest {best:.0f} s; top-1 {', '.join(str(r['top1']) for r in results)}")


if __name__ == "__main__":
    main()
