import sys

from components.serving.server import main

sys.exit(main())
