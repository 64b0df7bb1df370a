import sys

from graphprune.cli.main import main

sys.exit(main())
