"""normlab benchmark suite: normlab against PyTorch CPU eager, same process, same threads.

Pieces (importable, so that a ``normlab bench`` command can reuse them):

``benchmarks._timing``
    thread pinning, interleaved repeat timing, memory-bandwidth probe.
``benchmarks.bench_train_step``
    one SGD training step of the BN paper's MNIST net (784-100-100-100-10).
``benchmarks.bench_bn``
    the BatchNormalization layer alone, forward + backward, with a roofline bound.
``benchmarks.report``
    text table, Markdown and JSON writers.
``benchmarks.run``
    the command line: ``PYTHONPATH=src python benchmarks/run.py --help``.
"""
