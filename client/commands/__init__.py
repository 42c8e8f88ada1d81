"""The commands of ``python -m client``, one module each, over the shared helpers of :mod:`.args`.

Each command module has ``add_parser(commands, connection)`` (its arguments, with the connection
options as a parent parser) and ``run(parser, args, out, err) -> int`` (its exit status, a
:class:`contract.Exit`). Optional extras (pillow, PyAV, FastAPI, scikit-learn) are imported only
when their command runs.
"""
