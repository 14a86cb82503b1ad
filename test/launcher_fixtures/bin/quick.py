"""Prints its arguments and the TOFC_MODE variable, then exits 0.

With WAIT_FOR set it first waits (up to 20 s) for that file to exist.
"""
import os
import sys
import time

if os.environ.get('WAIT_FOR'):
    deadline = time.monotonic() + 20
    while not os.path.exists(os.environ['WAIT_FOR']) and time.monotonic() < deadline:
        time.sleep(0.02)
print('quick', ' '.join(sys.argv[1:]), 'TOFC_MODE=' + os.environ.get('TOFC_MODE', '-'), flush=True)
