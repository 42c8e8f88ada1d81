"""``python -m train`` (console command ``deepfake-train``): see :mod:`train.cli`."""

from __future__ import annotations

from train.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
