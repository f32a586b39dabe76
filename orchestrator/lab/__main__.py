"""``python -m orchestrator.lab`` (``make lab``): the sshd lab's command line."""

import sys

from orchestrator.lab.sshd import main

sys.exit(main())
