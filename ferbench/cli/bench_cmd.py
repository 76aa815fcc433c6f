def bench():
    """Not built yet."""
    raise SystemExit("not built yet")
