"""One PyTorch thread against two for flow matching's exact log-density.

Usage: ``python benchmarks/threads.py RUN_DIR [N]`` (a flow-matching run, e.g. of
``flowscope train fm --epochs 5 --out /tmp/fm5``): the log-density of N test points
(default 4000), one and two threads interleaved, two rounds; wall and CPU seconds.
"""

import sys
import time

import torch

from flowscope.runs import load_run, run_data

model, info = load_run(sys.argv[1])
x = run_data(info, "test").x[: int(sys.argv[2]) if len(sys.argv) > 2 else 4000]
for _ in range(2):
    for threads in (1, 2):
        torch.set_num_threads(threads)
        wall, cpu = time.perf_counter(), time.process_time()
        model.log_prob(x)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{threads} thread(s): wall {wall:.2f} s, CPU {cpu:.2f} s")
