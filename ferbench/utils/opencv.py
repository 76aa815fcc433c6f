"""OpenCV, imported in one place so that a build that cannot load is one clear line, not a trace.

ferbench depends on the GUI build (`opencv-python`) so that `ferbench live` opens a window on a
desktop.  On a server image without the X11/OpenGL client libraries that build fails to load;
the error then says which system packages to install, or which wheel to use instead.
"""

from __future__ import annotations

from ferbench.errors import FerbenchError

try:
    import cv2
except ImportError as exc:  # e.g. "libGL.so.1: cannot open shared object file"
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "import failed"
    raise FerbenchError(
        f"OpenCV cannot load ({reason}); on Debian/Ubuntu install its system libraries with "
        "`apt-get install libgl1 libglib2.0-0`, or on a machine without a screen replace it with "
        "`pip uninstall -y opencv-python && pip install 'opencv-python-headless<5'` "
        "(then use live --no-window or --serve)"
    ) from None

__all__ = ["cv2"]
