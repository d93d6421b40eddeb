"""Pulumi entry point: `pulumi up -s <region>` from infra/ declares one region's RecOps stack."""

from recops_infra.stack import build

build()
