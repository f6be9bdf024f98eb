"""`python -m odt ARGS`, the same as `odt ARGS`; `odt sweep` starts its runs this way."""
import os
import sys

from .cli import entry
from .sweep import die_with_parent

if os.environ.pop("ODT_DIE_WITH_PARENT", None):
    die_with_parent()
sys.argv[0] = "odt"  # run.log and summary.json record the command as `odt run ...`
entry()
