#!/usr/bin/env python3
"""Provision the bridge's assistant: `python scripts/setup_assistant.py --name … --model …`.

The same as `flask --app bridge setup-assistant`; see `--help`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.cli import setup_assistant_main  # noqa: E402

if __name__ == "__main__":
    setup_assistant_main()
