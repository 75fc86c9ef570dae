"""The ``normlab`` command line."""
