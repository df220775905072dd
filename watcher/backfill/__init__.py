"""`cctv-gender backfill`: classify an archive of frames where they lie, in-process or on Ray."""
