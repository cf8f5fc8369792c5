"""Running Python code with the network made unreachable: proof that token counting and pricing work offline.

The child aborts on any connection attempt or DNS lookup (an audit hook), proxies point at a dead port, and
tiktoken's cache directory is one the caller chose (empty, or seeded), so nothing can come from a download.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support import REPO

OFFLINE_PRELUDE = textwrap.dedent(
    """
    import sys
    def _no_network(event, args):
        if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
            raise RuntimeError(f"network access attempted: {event} {args!r}")
    sys.addaudithook(_no_network)
    """
)


def offline_env(tmp_path: Path, cache_dir: Path) -> dict[str, str]:
    dead = "http://127.0.0.1:9"
    return {
        **os.environ,
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
        "http_proxy": dead,
        "https_proxy": dead,
        "NO_PROXY": "",
        "no_proxy": "",
        "TIKTOKEN_CACHE_DIR": str(cache_dir),
        "TMPDIR": str(tmp_path / "tmp"),
    }


def run_offline(tmp_path: Path, cache_dir: Path, code: str) -> str:
    """Run `code` in a child Python without network; returns its stdout, fails the test on a non-zero exit."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_PRELUDE + textwrap.dedent(code)],
        env=offline_env(tmp_path, cache_dir),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
