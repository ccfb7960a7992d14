"""A short-lived cache shared by every worker, in front of the live data functions.

N screens watching the same view then cost the database what one screen costs: the first
request in each TTL runs the query, the others read its result. Redis when REDIS_URL is set
(several app instances), otherwise a file cache in a temp folder (several gunicorn workers on
one machine). Outside a running app (tests of data functions, the benchmark) nothing is cached.
"""
from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import threading
import time
from collections import OrderedDict

import flask
from flask_caching import Cache

EXTENSION_KEY = "fleet_monitor_cache"
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def init_cache(server: flask.Flask, redis_url: str, ttl_seconds: int) -> Cache:
    if redis_url:
        config = {"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": redis_url}
    else:
        folder = os.path.join(tempfile.gettempdir(), f"fleet-monitor-cache-{os.getuid()}")
        config = {"CACHE_TYPE": "FileSystemCache", "CACHE_DIR": folder, "CACHE_THRESHOLD": 2000}
    cache = Cache(config={**config, "CACHE_DEFAULT_TIMEOUT": ttl_seconds, "CACHE_KEY_PREFIX": "fm:"})
    cache.init_app(server)
    server.extensions[EXTENSION_KEY] = cache
    return cache


def _key(func, engine, args, kwargs) -> str:
    raw = repr((func.__module__, func.__qualname__, engine.url.render_as_string(hide_password=True), args,
                sorted(kwargs.items())))
    return hashlib.sha256(raw.encode()).hexdigest()


def lock_for(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def shared_cache(func):
    """Cache `func(engine, *args, **kwargs)` for the app's short TTL, keyed by its arguments."""

    @functools.wraps(func)
    def wrapper(engine, *args, **kwargs):
        cache = flask.current_app.extensions.get(EXTENSION_KEY) if flask.has_app_context() else None
        if cache is None:
            return func(engine, *args, **kwargs)
        key = _key(func, engine, args, kwargs)
        found = cache.get(key)
        if found is not None:
            return found
        # One query per key per process at a time: concurrent requests wait for the first.
        with lock_for(key):
            found = cache.get(key)
            if found is None:
                found = func(engine, *args, **kwargs)
                cache.set(key, found)
        return found

    wrapper.uncached = func
    return wrapper


# Reads several callbacks of one page make within a moment of each other (the analytics
# sections read the same window's fact rows): kept in the process, not in the shared cache,
# because they are large frames and arrays that would cost more to serialize than to share.
KEPT_READ_SECONDS = 15.0
_KEPT_READS = 16
_kept: OrderedDict[tuple, tuple[float, object]] = OrderedDict()
_kept_guard = threading.Lock()


def kept_read(engine, sql: str, params: dict, load):
    """``load()`` (which runs ``sql`` with ``params``), kept in this process for
    KEPT_READ_SECONDS; concurrent callers of the same read wait for the first."""
    key = (engine.url.render_as_string(hide_password=True), sql, repr(sorted(params.items())))
    with lock_for(hashlib.sha256(repr(key).encode()).hexdigest()):
        with _kept_guard:
            kept = _kept.get(key)
            if kept is not None and kept[0] > time.monotonic():
                _kept.move_to_end(key)   # the least recently used go first
                return kept[1]
        value = load()
        with _kept_guard:
            _kept[key] = (time.monotonic() + KEPT_READ_SECONDS, value)
            _kept.move_to_end(key)
            while len(_kept) > _KEPT_READS:
                _kept.popitem(last=False)
        return value


def forget_kept_reads() -> None:
    """Drop what kept_read keeps (the rows behind it changed, or a measurement starts cold)."""
    with _kept_guard:
        _kept.clear()
