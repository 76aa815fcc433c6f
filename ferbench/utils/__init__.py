"""Small utilities every layer may use: atomic file writes and the cache folder (`fileio`), the
glibc allocator setting (`allocator`), OpenCV's import (`opencv`), and what machine and versions
produced a result (`provenance`)."""
