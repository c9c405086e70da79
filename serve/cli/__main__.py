import sys

from serve.cli.main import main

sys.exit(main())
