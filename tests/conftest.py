import os

import torch

# keep the suite deterministic and light on a 2-core machine
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
