"""Data-parallel training over MPI, with synchronized batch normalization.

::

    import normlab
    from normlab.distributed import DataParallel

    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  distribute=DataParallel())
    model.fit(x, y, batch_size=256, epochs=5, seed=0)   # batch_size: the global batch

and ``mpiexec -n 4 python train.py``. Install an MPI and mpi4py with
``pip install "normlab[distributed]" mpich``. See ``docs/distributed.md``.

Importing this package does not import mpi4py: only constructing a
:class:`DataParallel` does. :func:`rank` and :func:`size` answer 0 and 1
where mpi4py is not installed.
"""

from __future__ import annotations

import sys

__all__ = ["DataParallel", "rank", "size", "is_chief"]


def __getattr__(name):
    if name == "DataParallel":
        from .strategy import DataParallel

        return DataParallel
    raise AttributeError(f"module 'normlab.distributed' has no attribute {name!r}")


def _world():
    if "mpi4py.MPI" not in sys.modules:
        try:
            from mpi4py import MPI
        except ImportError:
            return None
    return sys.modules["mpi4py.MPI"].COMM_WORLD


def rank() -> int:
    """This process's rank in ``MPI.COMM_WORLD`` (0 without MPI)."""
    world = _world()
    return 0 if world is None else world.Get_rank()


def size() -> int:
    """The number of ranks in ``MPI.COMM_WORLD`` (1 without MPI)."""
    world = _world()
    return 1 if world is None else world.Get_size()


def is_chief(model=None) -> bool:
    """True where output is printed and written: rank 0 of the model's strategy, or any process without one.

    Callbacks ask with their model; without a model, rank 0 of
    ``COMM_WORLD`` if mpi4py is already imported, else True.
    """
    if model is not None:
        dist = getattr(model, "_dist", None)
        return dist is None or dist.is_chief
    if "mpi4py.MPI" not in sys.modules:
        return True
    return sys.modules["mpi4py.MPI"].COMM_WORLD.Get_rank() == 0
