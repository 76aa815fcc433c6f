def predict():
    """Not built yet."""
    raise SystemExit("not built yet")
