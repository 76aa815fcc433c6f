def compare():
    """Not built yet."""
    raise SystemExit("not built yet")
