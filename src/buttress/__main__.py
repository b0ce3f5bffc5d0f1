"""``python -m buttress`` runs the command line."""

import sys

from buttress._cli import main

sys.exit(main())
