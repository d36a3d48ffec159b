"""The `studio` console command: `studio --host 0.0.0.0 --port 8189 --share --data-dir DIR`.

Flags only set the matching environment variables, so Settings stays the one place
that reads configuration; then app.py is run as a script.
"""

from __future__ import annotations

import argparse
import os
import runpy
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="studio", description="Run Hephaestus Studio.")
    parser.add_argument("--host", help="address to bind (0.0.0.0 for the LAN; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8189)")
    parser.add_argument("--share", action="store_true", help="also open a Gradio share link")
    parser.add_argument("--data-dir", help="where the database and files live")
    args = parser.parse_args(argv)
    if args.host:
        os.environ["GRADIO_SERVER_NAME"] = args.host
    if args.port:
        os.environ["GRADIO_SERVER_PORT"] = str(args.port)
    if args.share:
        os.environ["STUDIO_SHARE"] = "true"
    if args.data_dir:
        os.environ["STUDIO_DATA_DIR"] = args.data_dir
    app_path = Path(__file__).resolve().parent.parent / "app.py"
    os.chdir(app_path.parent)
    runpy.run_path(str(app_path), run_name="__main__")


if __name__ == "__main__":
    main()
