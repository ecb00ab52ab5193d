"""Allow `python -m scaler`."""

from scaler.cli import main

raise SystemExit(main())
