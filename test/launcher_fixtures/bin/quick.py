"""Prints its arguments and the TOFC_MODE variable, then exits 0."""
import os
import sys

print('quick', ' '.join(sys.argv[1:]), 'TOFC_MODE=' + os.environ.get('TOFC_MODE', '-'), flush=True)
