"""`python -m odt ARGS`, the same as `odt ARGS`; `odt sweep` starts its runs this way."""
import ctypes
import os
import signal
import sys

# A grid point of `odt sweep` must not outlive its Ray worker (Ctrl-C, ray.shutdown, a lost node),
# or an orphan would go on writing into a run directory that the next sweep resumes: the kernel
# kills it with its parent, from before the slow imports below.
if os.environ.pop("ODT_DIE_WITH_PARENT", None) and sys.platform.startswith("linux"):
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

from .cli import entry  # noqa: E402

sys.argv[0] = "odt"  # run.log and summary.json record the command as `odt run ...`
entry()
