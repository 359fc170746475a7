"""`python -m monitor.example` is `python -m monitor.example.train`."""

import sys

from .train import main

sys.exit(main())
