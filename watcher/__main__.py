"""`python -m watcher` is the same command line as `cctv-gender`."""

from watcher.commands.main import main

raise SystemExit(main())
