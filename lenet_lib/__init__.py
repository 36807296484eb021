"""lenet_lib: LeNet-5 experiments — data, models, optimizers, training, tidy results, reports."""
import os

# cuBLAS needs this before CUDA starts for deterministic matmuls (torch.use_deterministic_algorithms).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

__version__ = "0.1.0"
