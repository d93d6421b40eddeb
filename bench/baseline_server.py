"""The textbook baseline the serving benchmark compares against: FastAPI + redis-py +
numpy brute force (score every item by the dot product with the session's mean ALS
embedding). Same bundle, same Redis session format as recops-serve.

Run: RECOPS_BUNDLE=<dir> RECOPS_REDIS_URL=<url> uvicorn bench.baseline_server:app --port P
"""

from __future__ import annotations

import os

import numpy as np
import redis.asyncio as aioredis
from fastapi import FastAPI, HTTPException

from recops_serve.bundle import load_bundle

app = FastAPI()
bundle = load_bundle(os.environ["RECOPS_BUNDLE"])
redis = aioredis.Redis.from_url(os.environ["RECOPS_REDIS_URL"])
factors = bundle.item_factors
popular = bundle.pop_global


@app.get("/v1/recommendations")
async def recommendations(session_id: str | None = None, user_id: str | None = None, k: int = 50):
    sid = session_id or user_id
    if not sid:
        raise HTTPException(400, "user_id or session_id is required")
    raw = await redis.lrange("recops:s:" + sid, 0, 9)
    idx = [bundle.item_index(int(e.decode().split(":")[0])) for e in raw]
    idx = [i for i in idx if i is not None]
    if not idx:
        top = popular[:k]
    else:
        scores = factors @ factors[idx].mean(axis=0)
        top = np.argpartition(-scores, k)[:k]
        top = top[np.argsort(-scores[top])]
    return {"model_version": bundle.version, "items": [{"item_id": int(bundle.item_ids[i])} for i in top]}
