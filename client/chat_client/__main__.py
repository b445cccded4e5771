"""`python -m chat_client send|tail|tasks ...`: the `chat-client` command."""

import sys

from chat_client.cli import main

sys.exit(main())
