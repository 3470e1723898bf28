"""``python -m voiceops_localcluster.demo``: run the demo (``make demo``)."""

import sys

from .runner import main

if __name__ == "__main__":
    sys.exit(main())
