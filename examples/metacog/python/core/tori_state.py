"""tori_state: a stdlib-only client of a capsule's state proxy (SPEC §4).

The proxy listens on the Unix socket named by TORI_STATE_SOCKET. Who is
calling is decided by the proxy from the socket's peer credentials, so there
is nothing to authenticate here. Requests refused with 429 (rate limit) or
503 (buffer full) are retried after their Retry-After, a bounded number of
times; then StateError is raised.

    import tori_state
    st = tori_state.Client()            # TORI_STATE_SOCKET
    st.put("obs/1", b"seen")            # returns once durable
    st.get("obs/1")                     # b"seen", or None
    st.list("obs/")                     # ["obs/1"]
    seq = st.append_event({"kind": "note"})
    st.events(since=0, limit=100)       # [{"seq":..., "ts":..., "service":..., "event": {...}}]
"""

import base64
import http.client
import json
import os
import socket
import time
import urllib.parse

__all__ = ["Client", "StateError", "SOCKET_ENV"]

SOCKET_ENV = "TORI_STATE_SOCKET"


class StateError(Exception):
    """An answer other than the expected one."""

    def __init__(self, status, message, retry_after=None):
        super().__init__("state proxy: %d: %s" % (status, message))
        self.status = status
        self.message = message
        self.retry_after = retry_after


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTPConnection over an AF_UNIX socket."""

    def __init__(self, path, timeout):
        super().__init__("state", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Client:
    """A state proxy client. Not thread-safe: use one per thread."""

    def __init__(self, path=None, max_retries=5, max_retry_wait=60.0, timeout=30.0, sleep=time.sleep):
        path = path or os.environ.get(SOCKET_ENV)
        if not path:
            raise StateError(0, "%s is not set: not inside a capsule with state" % SOCKET_ENV)
        self.path = path
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.timeout = timeout
        self._sleep = sleep
        self._conn = None

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # The API.

    def get(self, key):
        """The value of key as bytes, or None if there is none."""
        status, body = self._request("GET", _key_path(key), ok=(200, 404))
        return body if status == 200 else None

    def put(self, key, value):
        """Store value (bytes or str) under key; returns once durable."""
        if isinstance(value, str):
            value = value.encode("utf-8")
        self._request("PUT", _key_path(key), body=value, ok=(204,))

    def delete(self, key):
        self._request("DELETE", _key_path(key), ok=(204,))

    def list(self, prefix=""):
        """The keys starting with prefix, sorted."""
        _, body = self._request("GET", "/v1/kv?prefix=" + urllib.parse.quote(prefix, safe=""), ok=(200,))
        return json.loads(body)

    def append_event(self, event):
        """Append a JSON-serialisable event; returns its seq."""
        data = json.dumps(event).encode("utf-8")
        _, body = self._request("POST", "/v1/events", body=data, ok=(200,),
                                headers={"Content-Type": "application/json"})
        return json.loads(body)["seq"]

    def batch(self, ops):
        """Apply ops atomically with one durable commit; returns the seq of
        the last record. Each op is ("put", key, value), ("delete", key) or
        ("event", json_serialisable)."""
        wire = []
        for op in ops:
            if op[0] == "put":
                value = op[2]
                if isinstance(value, str):
                    wire.append({"op": "put", "key": op[1], "value": value})
                else:
                    try:
                        wire.append({"op": "put", "key": op[1], "value": bytes(value).decode("utf-8")})
                    except UnicodeDecodeError:
                        wire.append({"op": "put", "key": op[1],
                                     "value_base64": base64.b64encode(bytes(value)).decode("ascii")})
            elif op[0] == "delete":
                wire.append({"op": "delete", "key": op[1]})
            elif op[0] == "event":
                wire.append({"op": "event", "event": op[1]})
            else:
                raise ValueError("batch op %r: expected put, delete or event" % (op[0],))
        data = json.dumps({"ops": wire}).encode("utf-8")
        _, body = self._request("POST", "/v1/batch", body=data, ok=(200,),
                                headers={"Content-Type": "application/json"})
        return json.loads(body)["seq"]

    def events(self, since=0, limit=100):
        """Up to limit events with a seq greater than since, oldest first."""
        _, body = self._request("GET", "/v1/events?since=%d&limit=%d" % (since, limit), ok=(200,))
        return json.loads(body)

    # Plumbing.

    def _request(self, method, path, body=None, ok=(200,), headers=None):
        attempt = 0
        while True:
            status, data, retry_after = self._once(method, path, body, headers or {})
            if status in ok:
                return status, data
            message = _error_message(data)
            if status in (429, 503) and attempt < self.max_retries:
                attempt += 1
                self._sleep(min(max(retry_after or 1.0, 0.0), self.max_retry_wait))
                continue
            raise StateError(status, message, retry_after)

    def _once(self, method, path, body, headers):
        for fresh in (False, True):
            if self._conn is None or fresh:
                self.close()
                self._conn = _UnixHTTPConnection(self.path, self.timeout)
            try:
                try:
                    self._conn.request(method, path, body=body, headers=headers)
                except (BrokenPipeError, ConnectionResetError):
                    # The proxy may have answered before reading the whole
                    # body (413) and closed: read that answer if it is there.
                    pass
                resp = self._conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, http.client.ResponseNotReady, BrokenPipeError,
                    ConnectionResetError):
                # A kept-alive connection the proxy closed (idle timeout):
                # try once more on a new one.
                self.close()
                if fresh:
                    raise
                continue
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            return resp.status, data, _retry_after(resp.getheader("Retry-After"))


def _key_path(key):
    return "/v1/kv/" + urllib.parse.quote(key, safe="")


def _retry_after(value):
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the proxy never sends one


def _error_message(data):
    try:
        return json.loads(data)["error"]
    except (ValueError, KeyError, TypeError):
        return data.decode("utf-8", "replace").strip()
