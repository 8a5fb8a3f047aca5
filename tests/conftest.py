"""Shared test set-up."""

import torch

# The models under test are tiny: one thread is fastest, and on shared CI cores it avoids
# the large slow-downs of oversubscribed OpenMP threads.
torch.set_num_threads(1)
