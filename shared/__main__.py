"""`python -m shared`: the operator CLI (see shared/operator/cli.py)."""

import sys

from shared.operator.cli import main

sys.exit(main())
