"""``python -m ILCDIRAC.CalibrationSystem.Utilities.emulator steering.xml`` = ``marlin-emulator``."""
from ILCDIRAC.CalibrationSystem.Utilities.emulator.cli import main

raise SystemExit(main())
