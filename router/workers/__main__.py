"""``python -m router.workers``: a worker process (:mod:`router.workers.worker`)."""

import sys

from router.workers.worker import main

sys.exit(main())
