"""A cloud part's run, on the task owner's loop (offload/owner.py): ``inputs`` (what crosses in: values
written in, uploads once per content), ``task`` (one remote task: submit once, wait, cancel, fetch), ``fanout`` (one task or ``runs`` at once),
``gateway`` (a gateway leads a task or follows a merged one, and gets its images), ``progress`` (what the
user is told, in the prompt's language). ComfyUI is not imported."""
from .gateway import Delivered, Place, deliver, files_of, follow, lead, start, start_output  # noqa: F401
from .inputs import fill_crossings, prepare, register_external  # noqa: F401
from .progress import status_text  # noqa: F401
from .spend import check_spend  # noqa: F401
from .fanout import MAX_RUNS, combined, run_plan, run_runs, with_seed_offset  # noqa: F401
from .task import (CANCEL_PAUSE_S, CANCEL_ROUNDS, DEFAULT_TIMEOUT_S, RunOutcome,  # noqa: F401
                   cancel_by_hand, cancel_task,
                   estimate_for, fetch_results, job_status, sleep_interruptible, submit_once,
                   wait_task)
