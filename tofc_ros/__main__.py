"""``python -m tofc_ros``: the ``tofc`` command-line tool (``tofc_ros.cli``)."""

import sys

from tofc_ros.cli import main

sys.exit(main())
