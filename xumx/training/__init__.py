"""The NNabla side of xumx: the network as an nnabla graph, its losses and fast CPU kernels,
the training data, distributed training, the schedule, the trainer, checkpoints, and the
reference separation backend.

Everything that imports nnabla lives here (:mod:`xumx.training.backend` says what is missing
where nnabla is not installed); separation, the command lines' I/O and evaluation never import
this package. Importing the package itself imports nothing of nnabla.
"""
