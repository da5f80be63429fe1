"""`python -m engine ...` is `kamigate ...`."""

from engine.cli import main

raise SystemExit(main())
