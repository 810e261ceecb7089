import sys

from hotspare.router.cli import main

sys.exit(main())
