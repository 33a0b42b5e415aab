"""Framework output in miniature, for the tests of where output goes (runlog, CLI).

:func:`make_noise` produces it the way the frameworks do: kfp.local's own logging context
(which swaps the root logger's handlers for a ``StreamHandler(sys.stdout)``) and its
indented ``print`` of task output, a child process that inherited fds 1 and 2 (as
``bentoml serve`` and Ray's processes do), library loggers and ``warnings``. ``NOISE``
belongs in the log file only, ``MUST_SEE`` on the terminal too.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

from kfp.local import logging_utils

CHILD = [
    sys.executable,
    "-c",
    "import os; os.write(1, b'child fd1\\n'); os.write(2, b'child fd2\\n')",
]


def make_noise() -> None:
    """What one kfp.local task, Ray, Feast and a served child print, in miniature."""
    with logging_utils.local_logger_context():
        logging.info("Executing task %s", logging_utils.format_task_name("train"))
        with logging_utils.indented_print():
            print("KFP-TASK-OUTPUT roc_curve=[0.0, 0.1, 0.2]")
        logging.info("Task 'train' finished with status SUCCESS")
    subprocess.run(CHILD, check=True)
    logging.getLogger("ray").warning("RAY-CHATTER token authentication is enabled")
    logging.getLogger("feast").info("FEAST-CHATTER registry cache expired")
    logging.getLogger("flywheel.cycle").info("FLYWHEEL-INFO running 8 stages")
    # What the default warnings.showwarning does (pytest records warnings instead).
    sys.stderr.write(warnings.formatwarning("LIB-WARNING deprecated", UserWarning, "x.py", 1))
    logging.getLogger("flywheel.loop").warning("FLYWHEEL-WARNING no champion yet")
    logging.getLogger("bentoml").error("LIB-ERROR the server exited")


NOISE = [
    "KFP-TASK-OUTPUT",
    "Executing task 'train'",
    "child fd1",
    "child fd2",
    "RAY-CHATTER",
    "FEAST-CHATTER",
    "FLYWHEEL-INFO",
    "LIB-WARNING",
]
MUST_SEE = ["FLYWHEEL-WARNING", "LIB-ERROR"]
