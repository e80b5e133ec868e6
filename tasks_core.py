"""Core tasks: build-bintest, test, lint."""
