"""The training job's contract with the operator: exit codes and the files a run leaves.

The Job's podFailurePolicy is rendered from these codes and the closed loop reads these files;
the trainer exits with and writes them. One definition, so the two can never drift.
"""

from __future__ import annotations

#: SIGTERM (spot reclaim, eviction): the run checkpointed and left; ignored by the Job's
#: podFailurePolicy, so a preemption never consumes backoff.
EXIT_PREEMPTED = 143
#: EX_CONFIG: the configuration or the data is wrong; retrying cannot help, the Job fails.
EXIT_CONFIG = 78
#: Every code that means "retrying cannot help": argparse usage error (2), EX_USAGE (64), EX_CONFIG.
CONFIG_ERROR_EXIT_CODES: tuple[int, ...] = (2, 64, EXIT_CONFIG)

#: The bundle's manifest (model version, metrics, schema hash) beside its arrays.
MANIFEST_NAME = "manifest.json"
BUNDLE_ARRAYS_NAME = "arrays.npz"
#: A checkpoint directory's state (stage, progress, ``saved_at``) beside its arrays.
CHECKPOINT_STATE_NAME = "state.json"
CHECKPOINT_ARRAYS_NAME = "arrays.npz"
