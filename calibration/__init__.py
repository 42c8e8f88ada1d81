"""Calibrations and operating points: what turns a served PROB_FAKE into a decision.

- :mod:`calibration.point` (standard library only): the ``calibration_<score>.json`` document, its
  checks, and applying it (the server's ``classify_<N>`` step, the clients' words for reviewers).
- :mod:`calibration.fit` (numpy, scikit-learn): fitting one on a labelled set's served scores.
- :mod:`calibration.install`: putting one beside the model version it was fitted for, with a record
  of who installed what, and going back to the previous one.
"""
