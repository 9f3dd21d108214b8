"""`cmserve bundle=DIR`: an exported bundle behind HTTP (FastAPI + uvicorn; `pip install 'crossmodal[serve]'`).

  GET  /health            {"status": "ok"}
  GET  /metadata          the bundle's card.json, and the input columns
  POST /predict           {"rows": [{COLUMN: value, …}, …]}: text as a string, image and audio as base64 (a
                          `data:…;base64,` prefix is allowed), a tabular column as a number or a string,
                          null (or blank text) for a missing input;
                          returns {"predictions": [{row, predicted, prob_CLASS, …}]}
  POST /predict/upload    multipart form: one row, text and tabular columns as fields, image/audio columns as files

Requests are batched: rows waiting together (up to max_batch rows, for at most max_wait_ms) go through the model in
one call. A missing input follows the checkpoint's data.on_missing: zero masks it, drop leaves the row out of the
answer, error refuses the request. A bad request (not JSON, no rows, a missing column, a wrong type, invalid base64,
an image or audio that does not decode, a body over max_body_mb) gets a 4xx with a one-line reason; it never takes the
server down. The server never
reads paths a client sends: image and audio arrive as bytes. Torch-free (tested): only the runtime's packages.
"""
# no `from __future__ import annotations`: FastAPI reads the routes' annotations (Request) as objects

import asyncio
import base64
import binascii
import json
import sys
from typing import Any

import numpy as np
import pandas as pd

from crossmodal_cli.arguments import arguments
from crossmodal_cli.data.csvfile import FIRST_ROW_LINE
from crossmodal_cli.errors import CrossmodalError, exit_on_user_error
from crossmodal_cli.runtime.bundle import Bundle
from crossmodal_cli.runtime.decode import prediction_frame

USAGE = ("usage: cmserve bundle=DIR [host=127.0.0.1] [port=8000] [max_batch=32] [max_wait_ms=5] [max_body_mb=16] "
         "[threads=0]")


class BadRequest(ValueError):
    """A client's mistake: answered with `status` and this one-line message."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def _bytes(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise BadRequest(f"{where}: expected a base64 string, got {type(value).__name__}")
    text = value.split(",", 1)[1] if value.startswith("data:") and "," in value else value
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: not valid base64") from None


def rows_frame(bundle: Bundle, rows: Any) -> pd.DataFrame:
    """The request's rows as the runtime's input frame (image/audio decoded from base64 to bytes)."""
    if not isinstance(rows, list) or not rows:
        raise BadRequest('expected {"rows": [{COLUMN: value, ...}, ...]} with at least one row', 400)
    cells: dict[str, list] = {column: [] for column in bundle.input_columns}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadRequest(f"rows[{i}]: expected an object of COLUMN: value, got {type(row).__name__}")
        for column, kind in bundle.input_columns.items():
            if column not in row:
                raise BadRequest(f"rows[{i}]: column '{column}' missing (the bundle reads "
                                 f"{', '.join(bundle.input_columns)}; null marks a missing input)")
            value = row[column]
            if value is None:
                cells[column].append(None)
            elif kind == "value":  # a tabular cell: a number or a category
                if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                    raise BadRequest(f"rows[{i}].{column}: expected a number or a string, got {type(value).__name__}")
                cells[column].append(value)
            elif kind == "text":
                if not isinstance(value, str):
                    raise BadRequest(f"rows[{i}].{column}: expected a string, got {type(value).__name__}")
                cells[column].append(value)
            else:
                cells[column].append(_bytes(value, f"rows[{i}].{column}"))
    return pd.DataFrame(cells)


class Batcher:
    """Runs the prepared inputs of concurrent requests through the model together (see the module docstring)."""

    def __init__(self, bundle: Bundle, max_batch: int, max_wait: float):
        self.bundle, self.max_batch, self.max_wait = bundle, max_batch, max_wait
        self.queue: asyncio.Queue | None = None
        self.calls = self.requests = self.rows = 0  # model calls, the requests and rows they answered

    async def submit(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        loop = asyncio.get_running_loop()
        if self.queue is None:
            self.queue = asyncio.Queue()
            loop.create_task(self._work())
        done = loop.create_future()
        await self.queue.put((feed, done))
        return await done

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            rows = _rows(items[0][0])
            deadline = loop.time() + self.max_wait
            while rows < self.max_batch and (left := deadline - loop.time()) > 0:
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
                rows += _rows(items[-1][0])
            try:
                outputs = await loop.run_in_executor(None, self._run, [feed for feed, _ in items])
            except Exception as err:  # the model itself failed: every waiting request gets a 500, the loop goes on
                for _, done in items:
                    done.set_exception(err)
                continue
            for (_, done), part in zip(items, outputs):
                done.set_result(part)

    def _run(self, feeds: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        joined = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
        self.calls, self.requests, self.rows = self.calls + 1, self.requests + len(feeds), self.rows + _rows(joined)
        outputs = self.bundle.run(joined, np.ones(_rows(joined), bool), self.max_batch)
        bounds = np.cumsum([0] + [_rows(f) for f in feeds])
        return [{k: v[a:b] for k, v in outputs.items()} for a, b in zip(bounds[:-1], bounds[1:])]


def _rows(feed: dict[str, np.ndarray]) -> int:
    return len(next(iter(feed.values())))


def create_app(bundle: Bundle, max_batch: int = 32, max_wait_ms: float = 5, max_body_mb: float = 16):
    """The FastAPI application serving `bundle`."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(title="crossmodal bundle", description=bundle.card.get("predicts", ""))
    batcher = Batcher(bundle, max_batch, max_wait_ms / 1000)
    on_missing = bundle.spec.get("on_missing", "error")  # the checkpoint's: a null input is masked (zero), leaves
                                                         # its row out (drop) or is a 422 (error)
    limit = int(max_body_mb * 2**20)

    def refuse(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def predict_frame(frame: pd.DataFrame) -> dict:
        loop = asyncio.get_running_loop()
        try:
            numbered = frame.set_axis(np.arange(len(frame)) + FIRST_ROW_LINE)  # errors name "DataFrame row I"
            feed, keep, reasons = await loop.run_in_executor(None, bundle.arrays, numbered, None, "zero", "DataFrame")
        except CrossmodalError as err:  # a word in a numeric tabular column
            raise BadRequest(str(err)) from None
        for modality in bundle.spec["modalities"]:
            column = bundle.describe(modality)
            for i, why in enumerate(reasons[modality]):
                if why and modality in ("image", "audio") and frame[column].iloc[i] is not None:  # sent, unusable
                    raise BadRequest(f"rows[{i}].{column}: {why}")
                if why and on_missing == "error":
                    raise BadRequest(f"rows[{i}].{column} is null and this bundle's on_missing=error; send the "
                                     f"input (its checkpoint was trained with data.on_missing=error)")
        if on_missing == "drop":
            keep &= np.all([feed[f"has_{m}"] for m in bundle.spec["modalities"]], axis=0)
        if not keep.any():
            raise BadRequest("no row has a usable input to predict from")
        outputs = await batcher.submit({name: values[keep] for name, values in feed.items()})
        rows = np.flatnonzero(keep)  # with on_missing=drop, the rows left out are absent from the answer
        table = prediction_frame(bundle.spec["task"], outputs, rows)
        table.insert(0, "row", rows)
        return {"predictions": _records(table)}

    async def guarded(make) -> JSONResponse:
        try:
            return JSONResponse(await make())
        except BadRequest as err:
            return refuse(err.status, str(err))

    @app.middleware("http")
    async def size_limit(request: Request, call_next):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return refuse(413, f"request body of {int(declared):,} bytes is over the limit of {limit:,} "
                               f"(cmserve max_body_mb={max_body_mb:g})")
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata() -> dict:
        return {"card": bundle.card, "columns": bundle.columns, "task": bundle.spec["task"]["kind"],
                "max_batch": max_batch, "served": {"model_calls": batcher.calls, "requests": batcher.requests,
                                                   "rows": batcher.rows}}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        async def answer():
            body = await _body(request, limit)
            try:
                payload = json.loads(body)
            except ValueError as err:
                raise BadRequest(f"the body is not JSON ({err})", 400) from None
            if not isinstance(payload, dict) or "rows" not in payload:
                raise BadRequest('expected {"rows": [{COLUMN: value, ...}, ...]}', 400)
            return await predict_frame(rows_frame(bundle, payload["rows"]))
        return await guarded(answer)

    @app.post("/predict/upload")
    async def upload(request: Request) -> JSONResponse:
        async def answer():
            await _body(request, limit)
            try:
                form = await request.form()
            except Exception as err:  # not multipart, or a malformed one
                raise BadRequest(f"expected a multipart form ({type(err).__name__}: {err})", 400) from None
            row = {}
            for column, kind in bundle.input_columns.items():
                if column not in form:
                    raise BadRequest(f"form field '{column}' missing (the bundle reads "
                                     f"{', '.join(bundle.input_columns)})")
                value = form[column]
                if kind in ("text", "value"):
                    row[column] = value if isinstance(value, str) else (await value.read()).decode(errors="replace")
                else:
                    data = await value.read() if hasattr(value, "read") else None
                    if data is None:
                        raise BadRequest(f"form field '{column}': expected a file upload")
                    row[column] = data
            return await predict_frame(pd.DataFrame({k: [v] for k, v in row.items()}))
        return await guarded(answer)

    return app


async def _body(request, limit: int) -> bytes:
    """The request body, refused past `limit` bytes also when no Content-Length announced it."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(f"request body over the limit of {limit:,} bytes (cmserve max_body_mb)", 413)
    request._body = body  # for request.form() after the stream was read
    return body


def _records(table: pd.DataFrame) -> list[dict]:
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in table.to_dict(orient="records")]


@exit_on_user_error
def run(argv: list[str]) -> int:
    if argv in (["-h"], ["--help"]):
        print(f"{USAGE}\n{__doc__}")
        return 0
    values = arguments(argv, {"bundle": None, "host": "127.0.0.1", "port": "8000", "max_batch": "32",
                              "max_wait_ms": "5", "max_body_mb": "16", "threads": "0"}, USAGE)
    numbers = {}
    for key in ("port", "max_batch", "max_wait_ms", "max_body_mb", "threads"):
        try:
            numbers[key] = float(values[key]) if key in ("max_wait_ms", "max_body_mb") else int(values[key])
        except ValueError:
            raise CrossmodalError(f"{key}={values[key]}: expected a number") from None
    import uvicorn

    bundle = Bundle(values["bundle"], numbers["threads"] or None)
    app = create_app(bundle, numbers["max_batch"], numbers["max_wait_ms"], numbers["max_body_mb"])
    uvicorn.run(app, host=values["host"], port=numbers["port"], log_level="warning")
    return 0


def main() -> None:
    """Console script `cmserve`."""
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
