"""Live snapshots: a value built at most once per `fresh_s` for all workers, kept warm while watched.

The Fleet overview is watched by many screens at once, each refreshing every few seconds. Its
answer is built once (queries plus rendering) into the shared cache (data/cache.py: a file cache,
or Redis), and every screen in every worker reads that copy. While anyone asked for a snapshot in
the last `WATCH_SECONDS`, a background thread in each worker process rebuilds it every `fresh_s`
seconds; the workers agree through a short claim in the shared cache so that one of them does the
work. The database therefore sees the same statements per second whether one screen or a hundred
are watching, and no screen waits on the database while the snapshot is warm.

A request reads the cached snapshot when it is younger than `3 * fresh_s`; otherwise (cold start,
the database away so refreshes fail) it builds it itself, one build per process at a time, and the
caller sees the build's exception (DatabaseUnavailable shows the page's banner).

Outside a running app (tests of builders, the benchmark harness) nothing is cached: `build()` runs.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import flask

from data.cache import EXTENSION_KEY

log = logging.getLogger(__name__)

WATCH_SECONDS = 30.0   # a snapshot nobody asked for in this long is no longer refreshed
POLL_SECONDS = 0.25    # how often the refresher looks for snapshots due
REFRESH_IN_BACKGROUND = True  # tests that drive refresh_due() themselves turn it off


@dataclass
class _Watched:
    cache: Any
    build: Callable[[], Any]
    fresh_s: float
    asked_at: float = field(default_factory=time.monotonic)
    failures: int = 0


_watched: dict[str, _Watched] = {}
_guard = threading.Lock()
_build_locks: dict[str, threading.Lock] = {}
_refresher: threading.Thread | None = None
_refresher_pid: int | None = None


def snapshot_key(name: str, *parts) -> str:
    return "snap:" + hashlib.sha256(repr((name, parts)).encode()).hexdigest()


def _cache():
    return flask.current_app.extensions.get(EXTENSION_KEY) if flask.has_app_context() else None


def _store(cache, key: str, value, fresh_s: float) -> None:
    # Kept a while past its serving age so a refresh in progress never leaves readers empty-handed.
    # The build time also under a key of its own: the refresher checks it without reading the value.
    built_at, timeout = time.time(), max(1, int(fresh_s * 6) + 1)
    cache.set(key, (built_at, value), timeout=timeout)
    cache.set(key + ":at", built_at, timeout=timeout)


def _build_lock(key: str) -> threading.Lock:
    with _guard:
        return _build_locks.setdefault(key, threading.Lock())


def live_snapshot(name: str, parts: tuple, build: Callable[[], Any], fresh_s: float) -> Any:
    """The value of `build()` for this name and key parts, at most about `fresh_s` seconds old.

    `build` must not need the request (it also runs in the background refresher): pass it what it
    needs through a closure. `parts` must identify everything the value depends on (database URL,
    time zone, ...).
    """
    cache = _cache()
    if cache is None:
        return build()
    key = snapshot_key(name, *parts)
    entry = cache.get(key)
    if entry is None or time.time() - entry[0] >= 3 * fresh_s:
        with _build_lock(key):  # one build per process at a time; the others wait for it
            entry = cache.get(key)
            if entry is None or time.time() - entry[0] >= fresh_s:
                entry = (time.time(), build())
                _store(cache, key, entry[1], fresh_s)
    _watch(key, cache, build, fresh_s)  # after a build, so the refresher does not build it too
    return entry[1]


def _watch(key: str, cache, build, fresh_s: float) -> None:
    global _refresher, _refresher_pid
    with _guard:
        found = _watched.get(key)
        if found is None:
            _watched[key] = _Watched(cache, build, fresh_s)
        else:
            found.asked_at = time.monotonic()
            found.build = build  # the latest closure (same inputs, by the key)
        # One refresher per process (gunicorn forks workers; a thread does not survive a fork).
        if REFRESH_IN_BACKGROUND and (_refresher is None or not _refresher.is_alive()
                                      or _refresher_pid != os.getpid()):
            _refresher_pid = os.getpid()
            _refresher = threading.Thread(target=_refresh_loop, name="fleet-snapshots", daemon=True)
            _refresher.start()


def _due(key: str, item: _Watched) -> bool:
    built_at = item.cache.get(key + ":at")
    # After failures, back off (up to 8 periods) so a database that is away is not hammered.
    period = item.fresh_s * min(2 ** item.failures, 8)
    return built_at is None or time.time() - built_at >= period


def _claim(cache, claim: str, timeout: int) -> bool:
    """True for one worker only: add() sets the key only when it is absent."""
    if cache.add(claim, os.getpid(), timeout=timeout):
        return True
    # A claim past its timeout (its worker died while building) still blocks add() in the file
    # cache, which only hides expired entries from get(): clear it and try once more.
    if cache.get(claim) is None:
        cache.delete(claim)
        return cache.add(claim, os.getpid(), timeout=timeout)
    return False


def refresh_due() -> int:
    """Rebuild the watched snapshots that are due and that no other worker is rebuilding; returns
    how many were rebuilt here. Called by the refresher thread (and by tests)."""
    now = time.monotonic()
    with _guard:
        for key in [k for k, w in _watched.items() if now - w.asked_at > WATCH_SECONDS]:
            del _watched[key]
        items = list(_watched.items())
    done = 0
    for key, item in items:
        try:
            if not _due(key, item):
                continue
            claim = key + ":claim"
            if not _claim(item.cache, claim, max(2, int(item.fresh_s * 2))):
                continue
            try:
                if not _due(key, item):  # built by another worker meanwhile
                    continue
                value = item.build()
                _store(item.cache, key, value, item.fresh_s)
                item.failures = 0
                done += 1
            finally:
                item.cache.delete(claim)
        except Exception as exc:  # noqa: BLE001 - a failed refresh must not stop the others
            item.failures += 1
            if item.failures == 1:
                log.warning("refreshing a live snapshot failed: %s", exc)
    return done


def _refresh_loop() -> None:
    global _refresher
    try:
        while True:
            time.sleep(POLL_SECONDS * (0.8 + 0.4 * random.random()))  # workers out of step
            try:
                refresh_due()
            except Exception:  # noqa: BLE001
                log.exception("live snapshot refresher")
            with _guard:
                if not _watched or not REFRESH_IN_BACKGROUND:
                    # Nothing watched: end; the next request starts a new refresher.
                    _refresher = None
                    return
    except SystemExit:  # a test server stopping its threads; the next request starts a new one
        with _guard:
            _refresher = None
