"""The `corral` command line: an HTTP client of the server (and `serve`, which starts it)."""
