"""The cctv-gender daemon: inbox discovery, readiness, claiming, batching, results and moves."""
