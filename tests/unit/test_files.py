"""conveyor.files.read_bounded: every file argument is a regular file of bounded size."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conveyor.configs.files import read_source
from conveyor.configs.sites import ConfigFileError
from conveyor.errors import InputError
from conveyor.evidence import EvidenceError, parse_junit_file, parse_scan_file
from conveyor.files import FileTooLarge, UnreadableFile, read_bounded
from tests.unit._files_support import raises_at_once

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")


def test_a_regular_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_bytes(b"x" * 3000)
    assert read_bounded(path, max_bytes=3000) == b"x" * 3000
    assert read_bounded(str(path), max_bytes=10_000) == b"x" * 3000


def test_an_oversized_file_is_refused_by_its_size(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 101)
    with pytest.raises(FileTooLarge) as caught:
        read_bounded(path, max_bytes=100)
    assert (caught.value.size, caught.value.max_bytes) == (101, 100)
    assert isinstance(caught.value, InputError)
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_devices_are_refused_without_reading(device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    with pytest.raises(UnreadableFile, match="character device"):
        read_bounded(device, max_bytes=1024)


def test_a_directory_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UnreadableFile, match="directory"):
        read_bounded(tmp_path, max_bytes=10)
    with pytest.raises(UnreadableFile, match="No such file") as caught:
        read_bounded(tmp_path / "absent", max_bytes=10)
    assert "\n" not in str(caught.value)


@needs_fifo
def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    error = raises_at_once(fifo, lambda: read_bounded(fifo, max_bytes=10))
    assert isinstance(error, UnreadableFile)
    assert error.reason == "a named pipe (FIFO)"
    link = tmp_path / "report.xml"
    link.symlink_to(fifo)  # the check is on the opened file, not the name
    assert isinstance(
        raises_at_once(link, lambda: read_bounded(link, max_bytes=10)), UnreadableFile
    )


@needs_fifo
def test_a_fifo_with_a_writer_is_refused_too(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader_end = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY)
    try:
        os.write(writer, b"<testsuite/>")
        with pytest.raises(UnreadableFile, match="named pipe"):
            read_bounded(fifo, max_bytes=100)
    finally:
        os.close(writer)
        os.close(reader_end)


@needs_fifo
def test_a_fifo_as_a_junit_report_is_a_one_line_evidence_error(tmp_path: Path) -> None:
    # issue 9 #9: `conveyor attest tests REF pipe.xml` blocked forever.
    fifo = tmp_path / "junit.xml"
    os.mkfifo(fifo)
    error = raises_at_once(fifo, lambda: parse_junit_file(fifo))
    assert isinstance(error, EvidenceError)
    assert str(error) == f"{fifo}: cannot read the report (a named pipe (FIFO))"
    scan = tmp_path / "scan.json"
    os.mkfifo(scan)
    assert isinstance(raises_at_once(scan, lambda: parse_scan_file(scan)), EvidenceError)


def test_dev_zero_as_a_report_is_refused_at_once() -> None:
    with pytest.raises(EvidenceError, match="character device"):
        parse_junit_file("/dev/zero")


@needs_fifo
def test_a_fifo_as_a_deployment_file_is_a_config_file_error(tmp_path: Path) -> None:
    fifo = tmp_path / "deploy.yaml"
    os.mkfifo(fifo)
    error = raises_at_once(fifo, lambda: read_source(fifo))
    assert isinstance(error, ConfigFileError)
    assert "named pipe" in str(error)
