"""The command line's exit codes (see README: Command line)."""

EXIT_OK = 0
EXIT_FAILURE = 1  # the work cannot be done: model, registry or database unusable
EXIT_USAGE = 2  # bad command line or config
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)
