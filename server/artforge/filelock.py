"""An exclusive lock on an open file that other processes respect: flock, or msvcrt.locking on Windows.

The lock goes with the file: it is released when the file is closed or the process ends, even
by kill -9, so a crashed holder never leaves it stuck.
"""

from __future__ import annotations

import sys
import time
from typing import BinaryIO

if sys.platform == "win32":
    import msvcrt

    def lock_file(file: BinaryIO, wait: bool) -> bool:
        """Lock `file`'s first byte; False when another holds it and `wait` is False."""
        while True:
            try:
                msvcrt.locking(file.fileno(), msvcrt.LK_NBLCK, 1)
                return True
            except OSError:
                if not wait:
                    return False
                time.sleep(0.5)  # LK_LOCK gives up after 10 s; an export takes minutes

else:
    import fcntl

    def lock_file(file: BinaryIO, wait: bool) -> bool:
        """Lock `file` with flock, which other processes and this one's other open files respect; False
        when another holds it and `wait` is False."""
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
