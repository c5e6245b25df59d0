"""Peak memory of a chapter, cell by cell: does it fit Binder's ~2 GB?

    python benchmarks/notebook_memory.py notebooks/07_openai_weights.ipynb          # full mode
    CLIP_FAST=1 python benchmarks/notebook_memory.py notebooks/07_openai_weights.ipynb

Runs every code cell in a fresh kernel (from notebooks/, as Jupyter would) and
prints, after each, the kernel's peak and current resident memory (VmHWM,
VmRSS; Linux only). Resident memory includes the pages of shared libraries
the kernel touched: a CUDA build of PyTorch alone adds several hundred MB
that the CPU-only build Binder installs does not.
"""
import json
import os
import sys
import time
from pathlib import Path

from jupyter_client.manager import start_new_kernel

PROBE = "print('MEM', *[l.split()[1] for l in open('/proc/self/status') if l.startswith(('VmHWM', 'VmRSS'))])"


def main(path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, MPLBACKEND="Agg", CLIP_FAST=os.environ.get("CLIP_FAST", "0"),
               PYTHONPATH=os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p))
    cells = ["".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
             if c["cell_type"] == "code"]
    manager, client = start_new_kernel(kernel_name="python3", cwd=str(path.resolve().parent), env=env)
    printed = []

    def collect(message):
        if message["msg_type"] == "stream":
            printed.append(message["content"]["text"])
        elif message["msg_type"] == "error":
            printed.append(f"ERROR {message['content']['ename']}: {message['content']['evalue']}\n")

    start = time.perf_counter()
    try:
        print(f"{'cell':>4} {'seconds':>7} {'peak MiB':>9} {'now MiB':>8}  first line")
        for index, code in enumerate(cells):
            printed.clear()
            client.execute_interactive(code, output_hook=collect, timeout=3600)
            errors = [line for line in "".join(printed).splitlines() if line.startswith("ERROR")]
            printed.clear()
            client.execute_interactive(PROBE, output_hook=collect, timeout=60)
            peak, now = ("".join(printed).split() + ["0", "0", "0"])[1:3]
            print(f"{index:4d} {time.perf_counter() - start:7.0f} {int(peak) / 1024:9.0f} {int(now) / 1024:8.0f}  "
                  f"{code.splitlines()[0][:50] if code else ''}", *errors, flush=True)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "notebooks/07_openai_weights.ipynb"))
