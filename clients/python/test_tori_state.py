"""Tests of tori_state against a real proxy.

Run by state/proxy's Go test TestPythonClient, which starts two proxies and
sets TORI_STATE_SOCKET (generous rate limit) and TORI_STATE_SOCKET_LIMITED
(60 a minute, burst 1). Run alone, the tests skip.
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tori_state  # noqa: E402

SOCK = os.environ.get(tori_state.SOCKET_ENV)
LIMITED = os.environ.get("TORI_STATE_SOCKET_LIMITED")


@unittest.skipUnless(SOCK, "needs a running proxy: run `go test ./state/proxy -run TestPythonClient`")
class ClientTest(unittest.TestCase):
    def setUp(self):
        self.st = tori_state.Client()

    def tearDown(self):
        self.st.close()

    def test_put_get_delete_list(self):
        self.st.put("py/a", b"\x00binary\xff")
        self.st.put("py/b", "text ü")
        self.st.put("py/with space/and%", "odd key")
        self.assertEqual(self.st.get("py/a"), b"\x00binary\xff")
        self.assertEqual(self.st.get("py/b"), "text ü".encode())
        self.assertEqual(self.st.get("py/with space/and%"), b"odd key")
        self.assertEqual(self.st.list("py/"), ["py/a", "py/b", "py/with space/and%"])
        self.st.delete("py/a")
        self.assertIsNone(self.st.get("py/a"))
        self.assertEqual(self.st.list("py/a"), [])

    def test_events(self):
        first = self.st.append_event({"kind": "note", "n": 1})
        second = self.st.append_event(["two"])
        self.assertGreater(second, first)
        evs = self.st.events(since=first - 1, limit=10)
        self.assertEqual([e["seq"] for e in evs][:2], [first, second])
        self.assertEqual(evs[0]["event"], {"kind": "note", "n": 1})
        self.assertEqual(evs[0]["service"], "py")  # from the peer's credentials

    def test_batch(self):
        self.st.put("pyb/gone", "x")
        seq = self.st.batch([("put", "pyb/a", "one"), ("put", "pyb/bin", b"\x00\xff"),
                             ("delete", "pyb/gone"), ("event", {"batch": True})])
        self.assertEqual(self.st.get("pyb/a"), b"one")
        self.assertEqual(self.st.get("pyb/bin"), b"\x00\xff")
        self.assertIsNone(self.st.get("pyb/gone"))
        evs = self.st.events(since=seq - 1, limit=1)
        self.assertEqual((evs[0]["seq"], evs[0]["event"]), (seq, {"batch": True}))
        with self.assertRaises(tori_state.StateError) as cm:
            self.st.batch([("put", "pyb/ok", "v"), ("put", "bad\x01key", "v")])
        self.assertEqual(cm.exception.status, 400)
        self.assertIsNone(self.st.get("pyb/ok"))  # all or nothing

    def test_errors(self):
        with self.assertRaises(tori_state.StateError) as cm:
            self.st.put("bad\x01key", b"v")
        self.assertEqual(cm.exception.status, 400)
        with self.assertRaises(tori_state.StateError) as cm:
            self.st.put("big", b"x" * (1024 * 1024 + 1))
        self.assertEqual(cm.exception.status, 413)


@unittest.skipUnless(LIMITED, "needs the rate-limited proxy of TestPythonClient")
class RetryAfterTest(unittest.TestCase):
    def test_honours_retry_after(self):
        slept = []

        def sleep(s):
            slept.append(s)
            time.sleep(s)

        with tori_state.Client(LIMITED, sleep=sleep) as st:
            st.put("r/1", b"1")  # the only token of the burst
            start = time.monotonic()
            st.put("r/2", b"2")  # 429, Retry-After: 1, then accepted
            self.assertGreaterEqual(slept[:1], [1.0])
            self.assertGreaterEqual(time.monotonic() - start, 0.9)
        with tori_state.Client(LIMITED, max_retries=0) as st:
            with self.assertRaises(tori_state.StateError) as cm:
                st.put("r/3", b"3")
                st.put("r/4", b"4")
            self.assertEqual(cm.exception.status, 429)
            self.assertIsNotNone(cm.exception.retry_after)


if __name__ == "__main__":
    unittest.main()
