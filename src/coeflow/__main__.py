import sys

from coeflow.cli import main

sys.exit(main())
