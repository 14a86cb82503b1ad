"""Prints 'ready <args>', runs until SIGINT, then exits 0; counts SIGINTs (a second one shows up)."""
import signal
import sys
import time

count = 0


def on_sigint(signum, frame):
    global count
    count += 1
    print(f'SIGINT #{count}', flush=True)


signal.signal(signal.SIGINT, on_sigint)
print('ready', ' '.join(sys.argv[1:]), flush=True)
while count == 0:
    time.sleep(0.02)
time.sleep(0.2)  # long enough for a doubled SIGINT to be counted
print('bye', flush=True)
sys.exit(0)
