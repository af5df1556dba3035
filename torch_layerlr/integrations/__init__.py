"""Glue for training frameworks, none of which this package depends on.

* :mod:`torch_layerlr.integrations.huggingface` (needs ``transformers``): :class:`DALSLossCallback`, a
  ``TrainerCallback`` that feeds DALS's loss-phase detector the training loss of every optimizer step.
* Lightning needs no glue: with automatic optimization Lightning calls ``optimizer.step(closure)`` and the
  closure returns the training loss, which DALS feeds to its detector (``examples/lightning/``).

Importing this package imports neither framework; import the submodule you need.
"""
