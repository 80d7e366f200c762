import os

import torch

# One intra-op thread per test process: the suite's nets are tiny, and with several processes on
# a 2-core machine, OpenMP threads that spin-wait make a tiny step 5x slower. Subprocesses (CLI
# tests) inherit the setting through the environment.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
