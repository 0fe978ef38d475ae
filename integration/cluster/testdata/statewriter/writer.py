"""Puts 100 keys through the state proxy, honouring 429 + Retry-After, reads
them back, and writes its verdict to writer.json beside stops.log."""
import http.client
import json
import os
import socket
import sys
import time


class Conn(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("state", timeout=30)
        self.path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.path)
        self.sock = s


conn = Conn(os.environ["TORI_STATE_SOCKET"])
limited = 0
retry_after = []


def call(method, path, body=None):
    global limited
    while True:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        data = r.read()
        if r.status == 429:
            limited += 1
            ra = r.getheader("Retry-After")
            if ra is None:
                sys.exit("429 without Retry-After")
            retry_after.append(ra)
            time.sleep(min(float(ra), 2.0))
            continue
        return r.status, data


for i in range(100):
    st, _ = call("PUT", "/v1/kv/k%03d" % i, ("value-%d" % i).encode())
    if st != 204:
        sys.exit("PUT k%03d: %d" % (i, st))
bad = []
for i in range(100):
    st, data = call("GET", "/v1/kv/k%03d" % i)
    if st != 200 or data != ("value-%d" % i).encode():
        bad.append(i)
verdict = {"written": 100, "bad": bad, "limited": limited, "retry_after": retry_after[:3]}
print(json.dumps(verdict), flush=True)
with open(os.path.join(os.environ.get("STOP_LOG_DIR", "/var/lib/tori"), "writer.json"), "w") as f:
    json.dump(verdict, f)
sys.exit(1 if bad or not limited else 0)
