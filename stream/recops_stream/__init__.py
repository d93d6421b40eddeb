"""The clickstream job (PyFlink) and its pure parts.

``features``, ``archive`` and ``runner`` import without pyflink (the project venv and the server use
them); ``job`` runs inside the Flink venv (``scripts/build-flink.sh``: ~/.cache/recops/flink-<v>/venv).
"""
