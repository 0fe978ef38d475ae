"""Runs until SIGTERM, then appends its name to $TORI_STATE_ROOT-side stops.log."""
import os
import signal
import sys
import time

LOG = os.path.join(os.environ.get("STOP_LOG_DIR", "/var/lib/tori"), "stops.log")


def stop(*_):
    time.sleep(0.2)  # a slow stop: a later service must wait for it
    with open(LOG, "a") as f:
        f.write(os.environ["TORI_SERVICE"] + "\n")
        f.flush()
        os.fsync(f.fileno())
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
print(os.environ["TORI_SERVICE"], "up", flush=True)
while True:
    time.sleep(60)
