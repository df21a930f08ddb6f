"""python -m open_dsm."""

from open_dsm.cli import main

raise SystemExit(main())
