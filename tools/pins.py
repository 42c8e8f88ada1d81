"""Prints install lists from pyproject.toml, the project's single source of pins.

python tools/pins.py no-deps   # packages installed with --no-deps
python tools/pins.py test-no-deps   # test-only packages installed with --no-deps (not in the image)
python tools/pins.py test-build   # test-only source builds (not in the image)
python tools/pins.py apt       # Debian packages (machines and the container image)
python tools/pins.py apt-dev   # Debian packages for development and CI only
python tools/pins.py extra server   # one optional-dependency group
"""

from __future__ import annotations

import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def load() -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10 (the NGC 24.10 image)
        import tomli as tomllib  # type: ignore[no-redef]
    with PYPROJECT.open("rb") as handle:
        return tomllib.load(handle)


def main(argv: list[str]) -> int:
    data = load()
    if argv == ["no-deps"]:
        items = data["tool"]["deepfake"]["no-deps"]
    elif argv == ["test-no-deps"]:
        items = data["tool"]["deepfake"]["test-no-deps"]
    elif argv == ["test-build"]:
        items = data["tool"]["deepfake"]["test-build"]
    elif argv == ["apt"]:
        items = data["tool"]["deepfake"]["apt"]
    elif argv == ["apt-dev"]:
        items = data["tool"]["deepfake"]["apt-dev"]
    elif len(argv) == 2 and argv[0] == "extra":
        items = data["project"]["optional-dependencies"][argv[1]]
    elif argv == ["base"]:
        items = data["project"]["dependencies"]
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print("\n".join(items))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
