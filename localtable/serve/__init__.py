"""`localtable serve`: a local web app over the runs folder (see docs/serve.md)."""
