"""``python -m marlin_emulator steering.xml`` = ``marlin-emulator``."""
from marlin_emulator.cli import main

raise SystemExit(main())
