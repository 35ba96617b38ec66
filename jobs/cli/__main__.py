"""`python -m jobs.cli ARGS…`: the `metering` command without its console script."""

import sys

from jobs.cli import main

sys.exit(main())
