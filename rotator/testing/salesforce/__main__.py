"""`python -m rotator.testing.salesforce`: see rotator.testing.salesforce._cli."""

import sys

from rotator.testing.salesforce._cli import main

sys.exit(main())
