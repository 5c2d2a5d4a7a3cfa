"""Benchmark ``conveyor lint`` against checkov's image checks on a synthetic repository.

    .venv/bin/python benchmarks/lint.py [--files 5000] [--checkov-venv DIR] [--no-checkov]

1. Builds a repository of ``--files`` files in a temporary folder by repeating the shared
   corpus (workflows + manifests) under varied names and folders.
2. Lints it with conveyor (in process, the library call the CLI makes). In the same run,
   conveyor and checkov — limited to ``CKV_K8S_14`` (image tag fixed, not latest/blank) and
   ``CKV_K8S_43`` (image uses a digest) — lint the first ``--checkov-files`` files of the
   same kind of repository (checkov grew past 23 GB RSS on all 5,000 here); files per
   second for each.
3. Recall of each on the corpus ground truth (tests/assets/lint/ground_truth.json):
   conveyor CV001/CV002 matched by (file, line, rule, reference); checkov matched
   generously — a ground-truth CV001 (CV002) entry counts as found when CKV_K8S_43
   (CKV_K8S_14) failed on a resource whose line range holds the entry's line.

checkov lives in its own virtual environment (default /tmp/conveyor-bench-checkov), created
here with pip when missing; it is never a project dependency.
"""

from __future__ import annotations

import sys

# benchmarks/copy.py would shadow the standard library's ``copy`` (dataclasses imports it).
sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("benchmarks")]

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
GROUND_TRUTH = REPO / "tests" / "assets" / "lint" / "ground_truth.json"
FOLDERS = ("workflows", "manifests")
CHECKS = {"CKV_K8S_43": "CV001", "CKV_K8S_14": "CV002"}


def corpus_files() -> list[Path]:
    return sorted(path for folder in FOLDERS for path in (CORPUS / folder).iterdir())


def build_repository(root: Path, count: int) -> None:
    sources = corpus_files()
    for index in range(count):
        source = sources[index % len(sources)]
        copy = index // len(sources)
        folder = root / f"team-{copy % 50:02d}" / f"svc-{copy:04d}"
        if source.parent.name == "workflows":
            folder = folder / ".github" / "workflows"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / f"{copy:04d}-{source.name}")


def run_conveyor(root: Path) -> tuple[float, int]:
    sys.path.insert(0, str(REPO / "src"))
    from conveyor.configs.lint import lint

    start = time.perf_counter()
    report = lint([root])
    elapsed = time.perf_counter() - start
    return elapsed, report.files


def conveyor_recall() -> float:
    from conveyor.configs.lint import lint

    expected = Counter(
        (e["file"], e["line"], e["rule"], e["reference"])
        for e in json.loads(GROUND_TRUTH.read_text())["findings"]
    )
    report = lint([CORPUS / folder for folder in FOLDERS])
    found = Counter(
        (Path(f.file).relative_to(CORPUS).as_posix(), f.line, f.rule, f.reference)
        for f in report.findings
        if f.rule in ("CV001", "CV002") and f.severity == "error"
    )
    return sum((found & expected).values()) / sum(expected.values())


def ensure_checkov(venv: Path) -> Path | None:
    binary = venv / "bin" / "checkov"
    if binary.exists():
        return binary
    print(f"installing checkov into {venv} (separate venv) ...", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "checkov"], check=True, timeout=900
        )
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"checkov could not be installed: {exc}", file=sys.stderr)
        return None
    return binary if binary.exists() else None


def run_checkov(binary: Path, target: Path) -> tuple[float, list[dict[str, object]]]:
    command = [
        str(binary),
        "-d",
        str(target),
        "--framework",
        "kubernetes",
        "--check",
        ",".join(CHECKS),
        "-o",
        "json",
        "--quiet",
        "--compact",
        "--skip-download",
    ]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    failed: list[dict[str, object]] = []
    try:
        payload = json.loads(done.stdout) if done.stdout.strip() else []
    except json.JSONDecodeError:
        payload = []
        print(done.stdout[:500], done.stderr[-2000:], file=sys.stderr)
    for block in payload if isinstance(payload, list) else [payload]:
        if isinstance(block, dict):
            failed.extend(block.get("results", {}).get("failed_checks", []))
    return elapsed, failed


def checkov_recall(binary: Path) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp)
        for path in corpus_files():
            (target / path.parent.name).mkdir(exist_ok=True)
            shutil.copyfile(path, target / path.parent.name / path.name)
        _, failed = run_checkov(binary, target)
    expected = json.loads(GROUND_TRUTH.read_text())["findings"]
    hits = 0
    for entry in expected:
        for check in failed:
            rule = CHECKS.get(str(check.get("check_id")))
            file = str(check.get("file_path", "")).lstrip("/")
            low, high = check.get("file_line_range") or (0, 0)  # type: ignore[misc]
            if rule == entry["rule"] and file == entry["file"] and low <= entry["line"] <= high:
                hits += 1
                break
    return hits / len(expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--checkov-venv", type=Path, default=Path("/tmp/conveyor-bench-checkov"))
    parser.add_argument("--no-checkov", action="store_true")
    parser.add_argument(
        "--checkov-files",
        type=int,
        default=500,
        help="files for the side-by-side run (checkov needed ~23 GB RSS for 5,000 here)",
    )
    args = parser.parse_args()
    if not CORPUS.is_dir():
        sys.exit(f"shared corpus not found at {CORPUS}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo"
        build_repository(root, args.files)
        conveyor_seconds, linted = run_conveyor(root)
        recall = conveyor_recall()
        rows = [("conveyor lint", linted, conveyor_seconds, recall)]
        binary = None if args.no_checkov else ensure_checkov(args.checkov_venv)
        if binary is not None:
            sample = Path(tmp) / "sample"
            build_repository(sample, args.checkov_files)
            sample_seconds, sample_files = run_conveyor(sample)
            rows.append(("conveyor lint", sample_files, sample_seconds, recall))
            checkov_seconds, _ = run_checkov(binary, sample)
            rows.append(
                (
                    "checkov (CKV_K8S_14, CKV_K8S_43)",
                    args.checkov_files,
                    checkov_seconds,
                    checkov_recall(binary),
                )
            )
        elif not args.no_checkov:
            print("checkov unavailable: conveyor's numbers alone", file=sys.stderr)
    print(f"synthetic repository: {args.files} files (corpus repeated)\n")
    print("| tool | files | seconds | files/s | recall CV001/CV002 (corpus) |")
    print("| --- | --- | --- | --- | --- |")
    for name, files, seconds, recall in rows:
        print(f"| {name} | {files} | {seconds:.2f} | {files / seconds:.0f} | {recall:.3f} |")
    if len(rows) == 3:
        speed = (rows[1][1] / rows[1][2]) / (rows[2][1] / rows[2][2])
        print(f"\nspeed-up on the same {rows[2][1]} files: {speed:.1f}x")


if __name__ == "__main__":
    main()
