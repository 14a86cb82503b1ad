"""Prints a few lines, then exits with code 3.

It exits after the file named by WAIT_FOR exists (when set), so a test can make it die only once
the other nodes are up; otherwise after CRASH_DELAY seconds (default 0.3).
"""
import os
import sys
import time

print('crasher starting', flush=True)
if os.environ.get('WAIT_FOR'):
    deadline = time.monotonic() + 20
    while not os.path.exists(os.environ['WAIT_FOR']) and time.monotonic() < deadline:
        time.sleep(0.02)
else:
    time.sleep(float(os.environ.get('CRASH_DELAY', '0.3')))
print('something went wrong', flush=True)
print('Traceback: imaginary', file=sys.stderr, flush=True)
sys.exit(3)
