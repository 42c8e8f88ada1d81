"""``python -m calibration install|rollback|history`` (standard library only)."""

import sys

from calibration.cli import main

sys.exit(main())
