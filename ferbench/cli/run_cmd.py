def run():
    """Not built yet."""
    raise SystemExit("not built yet")
