"""`python -m watcher` is the same command line as `cctv-gender`."""

from watcher.cli import main

raise SystemExit(main())
