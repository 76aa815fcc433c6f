"""Face detection, video sources and overlay drawing for live and predict modes."""
