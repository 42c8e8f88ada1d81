"""``python -m train``: fine-tune the detector on a labelled set, on the crops the server makes.

One run, in the order the modules are used:

- :mod:`train.data` reads the set through ``evaluate``'s layout readers, hashes every video's bytes
  and splits the set (seeded, class-stratified, videos that share a source on one side);
- :mod:`train.crops` asks the running server's ``preprocess_<N>`` for each video's face crops and
  keeps them in a cache keyed by the video's content and the served preprocessing settings;
- :mod:`train.augment` re-encodes each training video (re-compression, downscaling, blur) into new
  video bytes that go through the same server preprocessing;
- :mod:`train.features` runs the starting checkpoint's frozen trunk once per crop and caches its
  output at the frozen boundary;
- :mod:`train.heads` holds what is trained (``published``: the published head and optionally the
  last trunk stages; ``temporal``: :class:`export.temporal.TemporalHead`) and writes the checkpoint;
- :mod:`train.fit` runs the epochs: deterministic, early stopping on validation AUC, a checkpoint
  each epoch and ``--resume``;
- :mod:`train.report` writes ``report.json`` and ``report.md`` (before and after, with
  ``evaluate``'s metrics, and the model card); :mod:`train.cli` ties them together.

Needs the ``server`` and ``eval`` extras (torch, PyAV, scikit-learn).
"""
