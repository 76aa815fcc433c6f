def live():
    """Not built yet."""
    raise SystemExit("not built yet")
