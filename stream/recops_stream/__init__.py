"""The clickstream job (PyFlink) and its pure parts.

``features``, ``archive`` and ``runner`` import without pyflink (the project venv and the server use
them); ``job`` runs inside the Flink venv (``scripts/build-flink.sh``: ~/.cache/recops/flink-<v>/venv).
"""

import sys
from pathlib import Path

# recops_contracts (stdlib only) sits in operator/ beside stream/, in the repo and in the image: every
# process that imports the job's code finds it, the Flink venv's driver and its Python UDF workers too
_OPERATOR = Path(__file__).resolve().parents[2] / "operator"
if _OPERATOR.is_dir() and str(_OPERATOR) not in sys.path:
    sys.path.append(str(_OPERATOR))
