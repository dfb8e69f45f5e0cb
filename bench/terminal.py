"""A terminal's text as an SVG picture (for the README), and ``afpipe status`` run
beside a benchmark's server, with the server's own settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from xml.sax.saxutils import escape

from bench.common import Server

LINE_PX, CHAR_PX, PAD_PX, FONT_PX = 19, 8.4, 16, 14


def afpipe_status(server: Server) -> str:
    """``afpipe status`` against ``server``, as an operator on its host would run it."""
    done = subprocess.run(
        [sys.executable, "-m", "afpipe", "status", "--url", f"{server.url}/metrics"],
        env=server.env,
        cwd=server.dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout + (f"(exit {done.returncode}) {done.stderr}" if done.returncode else "")


def write_svg(text: str, path: Path, title: str) -> None:
    """``text`` drawn as a terminal window: monospace, light on dark, nothing else."""
    lines = text.rstrip("\n").split("\n")
    width = PAD_PX * 2 + CHAR_PX * max(len(line) for line in lines)
    height = PAD_PX * 2 + 28 + LINE_PX * len(lines)
    rows = "\n".join(
        f'<text x="{PAD_PX}" y="{PAD_PX + 28 + LINE_PX * (i + 1) - 5}">{escape(line)}</text>'
        for i, line in enumerate(lines)
    )
    path.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}"'
        f' viewBox="0 0 {width:.0f} {height}">\n'
        f'<rect width="100%" height="100%" rx="8" fill="#1e1e2e"/>\n'
        f'<text x="{PAD_PX}" y="{PAD_PX + 8}" fill="#9399b2" font-family="sans-serif"'
        f' font-size="12">{escape(title)}</text>\n'
        f'<g fill="#cdd6f4" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace"'
        f' font-size="{FONT_PX}" xml:space="preserve">\n{rows}\n</g>\n</svg>\n'
    )
