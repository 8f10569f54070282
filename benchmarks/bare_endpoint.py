"""The baseline for webhook ingestion: parse the JSON body and answer 202, nothing else."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.post("/webhooks/{source}")
async def receive(source: str, request: Request) -> JSONResponse:
    """Parse and accept."""
    payload = await request.json()
    return JSONResponse({"source": source, "keys": len(payload)}, status_code=202)
