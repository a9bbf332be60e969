"""Startup benchmark: wall time of the installed ``leadbot`` command, from exec to exit.

Runs the command pip installed beside this interpreter (``.venv/bin/leadbot``) in a subprocess, several
times per case, from a scratch directory with its own ``config.toml`` and database, and prints the median
(and the spread) as a Markdown table:

- ``leadbot --help`` (target < 1 s);
- ``leadbot token issue <admin id>`` on a migrated database (target < 2 s);
- ``leadbot run`` with a malformed token: the one-line refusal;
- ``leadbot doctor`` with the Bot API on a closed local port (no network needed);
- ``leadbot api`` up to the moment it binds its port: the port is held by the benchmark, so the server
  stops there (uvicorn's exit code 3) after the settings, the schema check and the whole app;
- for reference, ``python -c "import bot.factory"``: what every command imported before it started,
  until the command line learnt to import lazily (aiogram and every router).

    python bench/bench_startup.py [--runs 7]

Nothing leaves 127.0.0.1. Figures go to docs/benchmarks.md ("Startup").
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADMIN = 1001
TARGETS = {"`leadbot --help`": 1.0, f"`leadbot token issue {ADMIN}`": 2.0}


def leadbot_command() -> str:
    beside = Path(sys.executable).parent / "leadbot"
    found = str(beside) if beside.exists() else shutil.which("leadbot")
    if found is None:
        sys.exit("the leadbot command is not installed: pip install -e . first")
    return found


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def timed(argv: list[str], cwd: Path, env: dict[str, str], expect: int) -> float:
    started = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != expect:
        sys.exit(f"{' '.join(argv)} exited {result.returncode}, expected {expect}:\n{result.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="runs per case (default 7)")
    args = parser.parse_args()

    leadbot = leadbot_command()
    env = {name: value for name, value in os.environ.items() if not name.upper().startswith("LEADBOT_")}
    with tempfile.TemporaryDirectory(prefix="leadbot-startup-") as scratch, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cwd = Path(scratch)
        (cwd / "config.toml").write_text(
            f'[bot]\napi_server = "http://127.0.0.1:{closed_port()}"\n\n[access]\nadmins = [{ADMIN}]\n\n'
            f"[api]\nport = {closed_port()}\n",
            encoding="utf-8",
        )
        cases: list[tuple[str, list[str], dict[str, str], int]] = [
            ("`leadbot --help`", [leadbot, "--help"], env, 0),
            (f"`leadbot token issue {ADMIN}`", [leadbot, "token", "issue", str(ADMIN)], env, 0),
            ("`leadbot run`, malformed token", [leadbot, "run"], env | {"LEADBOT_BOT__TOKEN": "not-a-token"}, 2),
            ("`leadbot doctor`, Bot API not reachable", [leadbot, "doctor"], env | {"LEADBOT_BOT__TOKEN": "1:x"}, 1),
            (
                "`leadbot api`, until it binds its port",
                [leadbot, "api"],
                env | {"LEADBOT_API__PORT": str(taken.getsockname()[1])},
                3,
            ),
            (
                'reference: `python -c "import bot.factory"`',
                [sys.executable, "-c", "import bot.factory"],
                env | {"PYTHONPATH": str(ROOT)},
                0,
            ),
        ]
        # The first token issue creates and migrates the database; every case runs once unmeasured.
        for _name, argv, case_env, expect in cases:
            timed(argv, cwd, case_env, expect)
        results = {
            name: [timed(argv, cwd, case_env, expect) for _ in range(args.runs)]
            for name, argv, case_env, expect in cases
        }

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.runs} runs per case, {os.cpu_count()} CPUs, load average {load:.2f} at the end\n")
    print("| command | median | min | max | target |")
    print("|---|---:|---:|---:|---|")
    for name, times in results.items():
        target = TARGETS.get(name)
        median = statistics.median(times)
        verdict = "" if target is None else f"< {target:.0f} s {'✅' if median < target else '❌'}"
        print(f"| {name} | {median:.2f} s | {min(times):.2f} s | {max(times):.2f} s | {verdict} |")


if __name__ == "__main__":
    main()
