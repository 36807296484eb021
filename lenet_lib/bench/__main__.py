"""`make bench` = python -m lenet_lib.bench [--quick]: one model, per variant, then many models (single.py)."""
from lenet_lib.bench.single import main

if __name__ == "__main__":
    main()
