"""What the operator, the inference image, the stream job and the infra stacks agree on.

Small, typed and free of heavy dependencies (stdlib and pydantic), so every component imports it
and none imports another's package: the serve config schema (``serving``), storage URIs
(``storage``), the training job's exit codes and artifact names (``training``) and the cluster's
node labels and taints (``topology``).
"""
