"""The operator's kopf entry module: importing it registers every handler.

``recops-operator run`` loads this module; startup settings live here so the
in-cluster (Helm) and local (demo/tests) runs behave the same.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import kopf

from recops_operator import experiment, handlers, webhook
from recops_operator.rollout import handlers as rollout_handlers
from recops_operator.training import handlers as training_handlers

#: Every controller, registered the same way (``register(registry)``).
CONTROLLERS = (handlers, rollout_handlers, training_handlers, experiment, webhook)
for _controller in CONTROLLERS:
    _controller.register(kopf.get_default_registry())

PREFIX = "recops.io"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, logger: logging.Logger, **_: Any) -> None:
    # Keep kopf's bookkeeping in our own annotations; status stays ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{PREFIX}/kopf-finalizer"
    # Long watches with a client timeout above the server's, so broken connections are noticed.
    settings.watching.server_timeout = 270
    settings.watching.client_timeout = 300
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    # kopf's own handler logs never become Kubernetes Events: at INFO every "Handler succeeded"
    # is an Event write (the API server's largest load at scale), and at WARNING/ERROR every
    # "failed temporarily" retry is a new Event. Failures are recorded by recops_operator.events
    # (one Event per distinct failure, with a count); kopf.event (rollout) is not filtered by this.
    settings.posting.level = logging.CRITICAL
    settings.execution.max_workers = int(os.environ.get("RECOPS_MAX_WORKERS", "8"))
    settings.batching.worker_limit = int(os.environ.get("RECOPS_WORKER_LIMIT", "200"))

    port = os.environ.get("RECOPS_WEBHOOK_PORT")
    if port:
        host = os.environ.get("RECOPS_WEBHOOK_HOST", "127.0.0.1")
        cert_dir = os.environ.get("RECOPS_WEBHOOK_CERT_DIR")
        if cert_dir:
            d = Path(cert_dir)
            settings.admission.server = kopf.WebhookServer(
                addr="0.0.0.0",
                port=int(port),
                host=host,
                certfile=d / "tls.crt",
                pkeyfile=d / "tls.key",
                cafile=(d / "ca.crt") if (d / "ca.crt").exists() else None,
            )
        else:  # local: self-signed on loopback, and let kopf manage the webhook configuration
            crt, key = webhook.self_signed(host)
            settings.admission.server = kopf.WebhookServer(
                addr=host, port=int(port), host=host, certfile=crt, pkeyfile=key, cafile=crt
            )
        if os.environ.get("RECOPS_WEBHOOK_MANAGED", "" if cert_dir else "1"):
            settings.admission.managed = f"validate.{PREFIX}"

    metrics_port = os.environ.get("RECOPS_METRICS_PORT")
    if metrics_port:
        from prometheus_client import start_http_server

        start_http_server(int(metrics_port), addr=os.environ.get("RECOPS_METRICS_ADDR", "0.0.0.0"))
        logger.info("metrics on :%s/metrics", metrics_port)
