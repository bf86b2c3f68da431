"""`python -m imgcls.sweeps experiments/<name>.py --workdir=W`: see imgcls.sweeps.sweep."""

import sys

from imgcls.sweeps import sweep

sys.exit(sweep.main())
