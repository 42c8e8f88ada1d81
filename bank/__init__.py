"""The bank of confirmed fakes: vPDQ fingerprints in a real database, and matching against them.

- :mod:`bank.store`: the database (SQLite by default, PostgreSQL when several servers or pages share
  one), found through one setting, ``DEEPFAKE_BANK``; every change keeps who, when and why.
- :mod:`bank.match`: the matching rule and an index that answers it quickly (numpy only).
- :mod:`bank.exchange`: import and export in the hash-sharing format ``threatexchange`` reads.

Standard library and numpy (and psycopg for PostgreSQL): the plain client can manage a bank with
no hashing library; fingerprints of videos come from the server.
"""
