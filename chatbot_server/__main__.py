"""python -m chatbot_server."""

import sys

from .cli import main

sys.exit(main())
