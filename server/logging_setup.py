"""Structured logs: one JSON object per line, each carrying the request id of its request.

Every request gets an id: the caller's ``X-Request-ID`` header when it is a sane token (letters,
digits, ``._:-``, at most 128 characters, as a proxy or load balancer sets it), else a new
random one. The id is sent back in the ``X-Request-ID`` response header, is added to every log
record written while the request is handled, and appears in gunicorn's access log (the JSON
logger class below reads it from the response header).

- ``configure_logging(level)``: JSON lines on stderr for the root logger (``python app.py``);
- ``init_request_id(server)``: the request id hooks on a Flask server;
- ``GunicornJsonLogger``: gunicorn's logger class (see gunicorn.conf.py) writing JSON error and
  access logs, and configuring the app's own loggers the same way in each worker.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import uuid
from datetime import datetime, timezone

import flask
from gunicorn.glogging import Logger as _GunicornLogger

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_STANDARD_ATTRS = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}


def current_request_id() -> str | None:
    """The id of the request being handled (None outside a request)."""
    if not flask.has_request_context():
        return None
    return flask.g.get("request_id")


class JsonFormatter(logging.Formatter):
    """A log record as one JSON line: time (UTC, with offset), level, logger, message, pid,
    request_id, any ``extra`` fields, and the exception text if any."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = getattr(record, "request_id", None) or current_request_id()
        if request_id:
            payload["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in payload and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


def configure_logging(level: str | int = "INFO", stream=None) -> None:
    """Send the root logger's records to `stream` (stderr) as JSON lines, replacing its handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)


def _assign_request_id():
    incoming = flask.request.headers.get(REQUEST_ID_HEADER, "")
    flask.g.request_id = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex


def _send_request_id(response):
    if not flask.g.get("request_id"):
        _assign_request_id()
    response.headers[REQUEST_ID_HEADER] = flask.g.request_id
    return response


def init_request_id(server: flask.Flask) -> None:
    """Give every request an id (first of all before-request hooks, so even a request the sign-in
    guard turns away has one) and send it back in the X-Request-ID header. Idempotent."""
    if server.extensions.get("fleet_request_id"):
        return
    server.extensions["fleet_request_id"] = True
    server.before_request_funcs.setdefault(None, []).insert(0, _assign_request_id)
    server.after_request(_send_request_id)


class GunicornJsonLogger(_GunicornLogger):
    """gunicorn's logger writing JSON lines: the error log (and the app's loggers) on stderr, the
    access log with method, path, status, bytes, duration_ms, request_id, pid."""

    def setup(self, cfg):
        super().setup(cfg)
        formatter = JsonFormatter()
        for handler in self.error_log.handlers + self.access_log.handlers:
            handler.setFormatter(formatter)
        configure_logging(cfg.loglevel)

    def access(self, resp, req, environ, request_time):
        if not self.access_log_enabled:
            return
        try:
            headers = resp.headers.items() if hasattr(resp.headers, "items") else resp.headers
            response_headers = {str(k).lower(): v for k, v in headers}
            status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
            fields = {
                "remote_addr": environ.get("REMOTE_ADDR"),
                "method": environ.get("REQUEST_METHOD"),
                "path": environ.get("PATH_INFO"),
                "query": environ.get("QUERY_STRING") or None,
                "status": int(status) if str(status).isdigit() else status,
                "bytes": getattr(resp, "sent", None),
                "duration_ms": request_time.total_seconds() * 1000.0,
                "request_id": response_headers.get(REQUEST_ID_HEADER.lower()),
                "user_agent": environ.get("HTTP_USER_AGENT"),
                "referer": environ.get("HTTP_REFERER"),
            }
            self.access_log.info("%s %s %s", fields["method"], fields["path"], fields["status"], extra=fields)
        except Exception:  # an access log line must never break a response
            self.error_log.exception("could not write the access log")
