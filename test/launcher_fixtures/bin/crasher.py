"""Prints a few lines, then exits with code 3 (after CRASH_DELAY seconds, default 0.3)."""
import os
import sys
import time

print('crasher starting', flush=True)
time.sleep(float(os.environ.get('CRASH_DELAY', '0.3')))
print('something went wrong', flush=True)
print('Traceback: imaginary', file=sys.stderr, flush=True)
sys.exit(3)
