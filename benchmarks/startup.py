# ruff: noqa: E402  (sys.path is set up before the project imports)
"""Start-up benchmark: ``conveyor resolve`` / ``inspect`` / ``--help`` against ``skopeo
inspect`` as processes, on a real loopback registry (issue 11: resolve and inspect ≤ 0.15 s,
≤ 5x ``skopeo inspect --raw``).

    .venv/bin/python benchmarks/startup.py [--runs N]

Bytecode is compiled first and the measured processes run without PYTHONDONTWRITEBYTECODE
(the installed state). Every command runs once per round, in a rotating order, for N rounds
(default 11); the table shows medians (wall, and CPU: user + system, steadier when other
work shares the machine) and the ratio to ``skopeo inspect --raw`` measured in the same
rounds. ``--baseline SRC`` also runs each conveyor command with an older src/ in the rounds.
skopeo's blob cache is deleted before each skopeo run (it does not matter for inspect, which
mounts nothing, but it keeps skopeo as a fresh CI machine sees it).

conveyor runs as users run it: the console script pip installed beside the interpreter
(``-m conveyor`` when there is none). The import floor row is a Python process importing only
the libraries a resolve cannot do without (typer, http.client, hashlib, json), with the
collector set as conveyor's entry sets it: what any CLI built on them pays before its own
first line.

Then ``python -X importtime`` runs of ``conveyor resolve`` and ``conveyor inspect``, import
time summed by package (median of 5): what is left to cut, and whose it is.
"""

from __future__ import annotations

import os
import sys

# Keep this directory off sys.path: its copy.py would shadow the standard library's.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.bench import (
    Registry,
    clear_skopeo_cache,
    compile_bytecode,
    measured_environment,
    median,
    push_with_skopeo,
)
from tests.support.images import build_image

TARGET_SECONDS = 0.15
TARGET_RATIO = 5.0
_SCRIPT = Path(sys.executable).with_name("conveyor")
# What users run: the console script (``-m conveyor`` adds runpy's imports), by the
# interpreter its first line names.
CONVEYOR = [sys.executable, *([str(_SCRIPT)] if _SCRIPT.is_file() else ["-m", "conveyor"])]
# With the collector set as ``conveyor.cli.main.run`` sets it, so the floor is a true one.
FLOOR_IMPORTS = (
    "import gc; gc.set_threshold(100_000); import typer, http.client, hashlib, json; gc.freeze()"
)


def _commands(ref: str, host: str) -> dict[str, list[str]]:
    flags = ["--insecure-registry", host]
    return {
        "python -c pass (floor)": [sys.executable, "-c", "pass"],
        "import floor (typer, http.client)": [sys.executable, "-c", FLOOR_IMPORTS],
        "conveyor --help": [*CONVEYOR, "--help"],
        "conveyor resolve": [*CONVEYOR, "resolve", ref, *flags],
        "conveyor inspect": [*CONVEYOR, "inspect", ref, *flags],
        "skopeo inspect --raw": [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            f"docker://{ref}",
        ],
        "skopeo inspect": ["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"],
    }


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of one process."""
    if argv[0] == "skopeo":
        clear_skopeo_cache()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def _group(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "conveyor":
        return ".".join(parts[:2]) if len(parts) > 1 else "conveyor"
    if parts[0] in ("typer", "click", "rich", "shellingham", "pygments", "markdown_it"):
        return f"{parts[0]} (CLI framework)"
    return parts[0]


def import_profile(
    argv: list[str], env: dict[str, str], runs: int = 5
) -> tuple[float, list[tuple[str, float]]]:
    """Self import time by package (ms) of ``argv`` (a conveyor command): the median over
    ``runs`` runs of each package's sum, so one disturbed run does not decide."""
    samples: dict[str, list[float]] = defaultdict(list)
    totals: list[float] = []
    for _ in range(runs):
        done = subprocess.run(
            [argv[0], "-X", "importtime", *argv[1:]],
            capture_output=True,
            text=True,
            env=env,
        )
        by_group: dict[str, float] = defaultdict(float)
        for line in done.stderr.splitlines():
            match = _IMPORT_LINE.match(line)
            if match:
                by_group[_group(match.group(4))] += int(match.group(1)) / 1000
        totals.append(sum(by_group.values()))
        for group, ms in by_group.items():
            samples[group].append(ms)
    medians = {
        group: median(values + [0.0] * (runs - len(values))) for group, values in samples.items()
    }
    return median(totals), sorted(medians.items(), key=lambda item: -item[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="rounds (at least 5)")
    parser.add_argument(
        "--baseline", type=Path, help="also run the conveyor commands with this src/ (older code)"
    )
    args = parser.parse_args()
    runs = max(5, args.runs)
    for tool in ("docker-registry", "skopeo"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (make debian-deps installs it)", file=sys.stderr)
            return 2
    print(compile_bytecode(), flush=True)
    env = measured_environment()
    work = Path(tempfile.mkdtemp(prefix="conveyor-startup-"))
    registry = Registry(work / "registry")
    try:
        registry.start()
        image = build_image(work / "image", labels={"git.commit": "abc123"})
        ref = f"{registry.host}/bench/app:v1"
        push_with_skopeo(image.layout, ref)
        commands = _commands(ref, registry.host)
        envs = dict.fromkeys(commands, env)
        if args.baseline is not None:
            for name in [n for n in commands if n.startswith("conveyor ")]:
                commands[f"before: {name}"] = commands[name]
                envs[f"before: {name}"] = {**env, "PYTHONPATH": str(args.baseline)}
        names = list(commands)
        for name, argv in commands.items():  # warm the page cache and bytecode once
            _run(argv, envs[name])
        times: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for round_number in range(runs):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                wall, used = _run(commands[name], envs[name])
                times[name].append(wall)
                cpu[name].append(used)

        peer = median(times["skopeo inspect --raw"])
        print()
        print(f"median wall seconds of {runs} alternated runs, loopback registry, 2-core machine")
        header = (
            f"{'command':<34}{'median s':>10}{'min s':>8}{'cpu s':>8}{'/ skopeo --raw':>16}"
            f"{'target':>20}"
        )
        print(header)
        print("-" * len(header))
        for name in names:
            m = median(times[name])
            target = ""
            if name in ("conveyor resolve", "conveyor inspect"):
                ok = m <= TARGET_SECONDS and m / peer <= TARGET_RATIO
                target = (
                    f"<= {TARGET_SECONDS} s, <= {TARGET_RATIO:g}x: {'met' if ok else 'NOT met'}"
                )
            print(
                f"{name:<34}{m:>10.3f}{min(times[name]):>8.3f}{median(cpu[name]):>8.3f}"
                f"{m / peer:>15.1f}x  {target}"
            )

        for name in ("conveyor resolve", "conveyor inspect"):
            total, groups = import_profile(commands[name], env)
            print()
            print(
                f"imports of `{name}` (python -X importtime, self time summed by package, "
                "median of 5 runs):"
            )
            print(f"  total {total:.1f} ms")
            for group, ms in groups[:14]:
                print(f"  {group:<34}{ms:>7.1f} ms")
        return 0
    finally:
        registry.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
