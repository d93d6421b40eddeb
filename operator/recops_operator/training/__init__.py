"""Spot-only training: render (CronJob / on-demand Job), preemption handling, closed loop.

Pure modules: ``config`` (spec.training view and shared constants), ``naming``, ``render``,
``invariants`` (admission check), ``preemption``, ``runs`` (status records), ``loop`` (metrics
gate). ``handlers`` holds the thin kopf glue.
"""

from recops_operator.training.invariants import check_capacity_invariants
from recops_operator.training.render import render_cronjob, render_on_demand_job, render_training

__all__ = ["check_capacity_invariants", "render_cronjob", "render_on_demand_job", "render_training"]
