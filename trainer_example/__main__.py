"""`python -m trainer_example` is `python -m trainer_example.train`."""

import sys

from .train import main

sys.exit(main())
