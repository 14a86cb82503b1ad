"""Ignores SIGINT (so the runner must escalate); SIGTERM ends it (default action)."""
import signal
import time

signal.signal(signal.SIGINT, signal.SIG_IGN)
print('ready (ignoring SIGINT)', flush=True)
while True:
    time.sleep(0.05)
