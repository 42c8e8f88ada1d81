"""``python -m client evaluate``: how good are the scores on a labelled set of videos.

:mod:`.layouts` reads the set (folders, CSV, DFDC, FaceForensics++, Celeb-DF), :mod:`.command`
scores it through the running server with the batch machinery of ``score --output``,
:mod:`.scores` keeps one line per video and derives the aggregations, :mod:`.metrics`
(scikit-learn) and :mod:`.report` (matplotlib) write ``report.json``, ``report.md`` and the plots.
Importing this package, :mod:`.layouts`, :mod:`.scores` or :mod:`.command` loads neither
scikit-learn nor matplotlib: those come with the ``eval`` extra and are imported for the report.
"""
