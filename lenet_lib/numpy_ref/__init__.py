"""NumPy LeNet-5 reference: layers with hand-written backward passes, the LeNet-5 family, torch.optim's
optimizers and a training loop, in NumPy alone (never imports torch; `compare` does, to compare).
"""
from lenet_lib.numpy_ref.layers import cross_entropy
from lenet_lib.numpy_ref.net import Sequential, build_lenet5, build_mlp, build_model, load_torch_state
from lenet_lib.numpy_ref.optim import make_optimizer, resolve_hyperparameters
from lenet_lib.numpy_ref.train import evaluate, train

__all__ = ["Sequential", "build_lenet5", "build_mlp", "build_model", "cross_entropy", "evaluate",
           "load_torch_state", "make_optimizer", "resolve_hyperparameters", "train"]
