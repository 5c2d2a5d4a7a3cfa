"""Where a promotion's time goes, measured inside ``conveyor serve`` (``server.py --probe``).

Put this directory on a server's PYTHONPATH with ``CONVEYOR_PROBE_DIR`` set: Python imports
``sitecustomize`` at start-up, and this one wraps the promotion's steps with timers (wall and
this thread's CPU time), then writes one JSON line per promotion to
``$CONVEYOR_PROBE_DIR/probe-<pid>.jsonl``. Nothing of the project is changed: the benchmark
reads the lines and prints the lock-hold breakdown. Steps that do not exist in the code
under test (a baseline without them) are simply not timed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

_DIR = os.environ.get("CONVEYOR_PROBE_DIR")
_local = threading.local()
_out_lock = threading.Lock()


def _record() -> dict[str, list[float]] | None:
    return getattr(_local, "phases", None)


def _add(name: str, wall: float, cpu: float) -> None:
    phases = _record()
    if phases is None:
        return
    where = getattr(_local, "section", 0)
    key = f"lock{where}:{name}" if where else name
    total = phases.setdefault(key, [0.0, 0.0, 0])
    total[0] += wall
    total[1] += cpu
    total[2] += 1


def _timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _record() is None:
            return fn(*args, **kwargs)
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            _add(name, time.perf_counter() - wall, time.thread_time() - cpu)

    return wrapper


def _wrap(owner: Any, attr: str, name: str) -> None:
    fn = getattr(owner, attr, None)
    if fn is not None:
        setattr(owner, attr, _timed(name, fn))


def _serialized(original: Callable[..., Any]) -> Callable[..., Any]:
    @contextlib.contextmanager
    def serialized(self: Any, lock_name: str) -> Iterator[None]:
        if _record() is None or not lock_name.startswith(("promote/", "tags/")):
            with original(self, lock_name):
                yield
            return
        _local.sections = getattr(_local, "sections", 0) + 1
        section = _local.sections
        wall, cpu = time.perf_counter(), time.thread_time()
        manager = original(self, lock_name)
        manager.__enter__()
        _add(f"lock{section} wait", time.perf_counter() - wall, time.thread_time() - cpu)
        held, held_cpu = time.perf_counter(), time.thread_time()
        _local.section = section
        try:
            yield
        except BaseException as exc:
            _local.section = 0
            if not manager.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            _local.section = section
            wall, cpu = time.perf_counter(), time.thread_time()
            manager.__exit__(None, None, None)
            _add("commit", time.perf_counter() - wall, time.thread_time() - cpu)
        finally:
            _local.section = 0
            _add(f"lock{section} held", time.perf_counter() - held, time.thread_time() - held_cpu)

    return serialized


def _held(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """A context-manager method timed from its entry's end to its exit's end (held)."""

    @contextlib.contextmanager
    def held(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with original(*args, **kwargs) as value:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                yield value
            finally:
                _add(name, time.perf_counter() - wall, time.thread_time() - cpu)

    return held


def _run(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def run(self: Any, *args: Any, **kwargs: Any) -> Any:
        _local.phases, _local.sections, _local.section = {}, 0, 0
        wall, cpu = time.perf_counter(), time.thread_time()
        ok = False
        try:
            result = original(self, *args, **kwargs)
            ok = True
            return result
        finally:
            phases = _local.phases
            phases["run"] = [time.perf_counter() - wall, time.thread_time() - cpu, 1]
            _local.phases = None
            line = json.dumps({"ok": ok, "phases": phases}) + "\n"
            with _out_lock, open(os.path.join(_DIR or ".", f"probe-{os.getpid()}.jsonl"), "a") as f:
                f.write(line)

    return run


def _install() -> None:
    from conveyor import attest
    from conveyor.ledger import sql
    from conveyor.oci import layout, referrers
    from conveyor.service import _promote, _signing, _workspace

    _wrap(sql.SqlLedger, "append", "ledger.append")
    sql.SqlLedger.serialized = _serialized(sql.SqlLedger.serialized)  # type: ignore[method-assign]
    promotion = _promote._Promotion
    promotion.run = _run(promotion.run)  # type: ignore[method-assign]
    steps = ("decide", "place", "record_promotion", "move_tags", "already_there", "converge",
             "still_current")  # fmt: skip
    for attr in steps:
        _wrap(promotion, attr, attr)
    for attr in ("tags_apart", "carry_referrers", "attach_recorded", "promotions_unlisted"):
        _wrap(_promote, attr, attr)
    _wrap(_promote.VerifiedLedger, "current", "verified.current")
    _wrap(_signing, "attach_attestation", "attach_attestation")
    _wrap(attest, "sign_envelope", "sign_envelope")
    _wrap(_workspace.Workspace, "verify_envelope", "verify_envelope")
    _wrap(layout.LayoutRepository, "has_manifest", "layout.has_manifest")
    _wrap(layout.LayoutRepository, "attach_referrers", "layout.attach_referrers")
    _wrap(layout.LayoutRepository, "write_blob", "layout.write_blob")
    import fcntl
    import types

    layout.fcntl = types.SimpleNamespace(  # type: ignore[attr-defined]
        flock=_timed("layout flock (index.json.lock)", fcntl.flock), LOCK_EX=fcntl.LOCK_EX
    )
    repository = layout.LayoutRepository
    repository._index_lock = _held("layout index.json.lock held", repository._index_lock)  # type: ignore[method-assign]
    _wrap(layout.LayoutRepository, "_write_index", "layout._write_index")
    _wrap(layout, "_atomic_write", "layout._atomic_write")
    _wrap(layout, "_fsync_directory", "layout._fsync_directory")
    _wrap(referrers, "attach_referrers", "referrers.attach_referrers")


if _DIR:
    _install()
