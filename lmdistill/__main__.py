import sys

from lmdistill.cli import main

sys.exit(main())
