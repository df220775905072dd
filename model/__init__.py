"""The ML library: image decoding, CLIP features, the heads and the model registry.

It knows nothing of inboxes, daemons or the results database, so a notebook, a benchmark or a
training job imports it as easily as the daemon does.
"""
