"""Print docs/flags.md, the flag tables of every command, generated from the parsers:

    python scripts/flags_doc.py > docs/flags.md

tests/test_readme.py fails when docs/flags.md is not what this prints."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from xumx.parsing import flags_document  # noqa: E402

sys.stdout.write(flags_document())
