"""The exported bundle against the PyTorch model on the same rows, on this machine's CPU (docs/benchmarks.md):

  * batch: every row of a CSV through `crossmodal_cli.load(run).predict` (PyTorch, as cmpredict) and through
    `crossmodal_cli.runtime.load_bundle(bundle).predict` (onnxruntime), best of `--repeats`, rows per second;
  * one row at a time: the median latency of `--single` single-row predictions each;
  * the server: `cmserve` on a loopback port, `--clients` concurrent clients x `--requests` requests of one row
    each (base64 image + audio, text): requests per second, p50 and p99 latency, requests per model call.

    python scripts/benchmark_bundle.py --out bench-bundle     # trains the default demo run first (seed 42)
    make demo && python scripts/benchmark_bundle.py --run outputs/demo --csv data/demo/demo.csv --out bench-bundle
"""
from __future__ import annotations

import argparse
import base64
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def median_latency(count: int, fn) -> float:
    times = []
    for i in range(count):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000


def serve(bundle: Path, csv: Path, clients: int, requests: int) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    scripts = Path(sys.executable).parent
    proc = subprocess.Popen([str(scripts / "cmserve"), f"bundle={bundle}", f"port={port}"])
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False).iloc[:clients]
    encode = lambda p: base64.b64encode((csv.parent / p).read_bytes()).decode()
    bodies = [json.dumps({"rows": [{"image_path": encode(r.image_path), "text": r.text,
                                    "audio_path": encode(r.audio_path)}]}).encode() for r in frame.itertuples()]
    try:
        for _ in range(300):
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        latencies, errors = [], []

        def client(i: int) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for _ in range(requests):
                start = time.perf_counter()
                connection.request("POST", "/predict", body=bodies[i], headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                latencies.append(time.perf_counter() - start)
                if response.status != 200:
                    errors.append(response.status)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/metadata")
        served = json.loads(connection.getresponse().read())["served"]
    finally:
        proc.terminate()
        proc.wait()
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    return {"requests": len(latencies), "errors": len(errors), "per_second": len(latencies) / seconds,
            "p50_ms": p50, "p99_ms": p99, "per_call": served["requests"] / max(served["model_calls"], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench-bundle"))
    parser.add_argument("--run", type=Path, help="an existing run folder (default: train the demo run into OUT/run)")
    parser.add_argument("--csv", type=Path, help="the rows to predict (default: the demo CSV the run trained on)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--single", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    from crossmodal_cli import fit, load
    from crossmodal_cli.exporting import export_bundle
    from crossmodal_cli.runtime import load_bundle

    args.out.mkdir(parents=True, exist_ok=True)
    run = args.run or fit(overrides=[f"data.demo.folder={args.out / 'demo'}", "trainer.progress_bar=false"],
                          run_dir=args.out / "run").dir
    bundle = args.out / "bundle"
    if not (bundle / "bundle.json").is_file():
        export_bundle(Path(run) / "checkpoints" / "best.ckpt", bundle)
    csv = args.csv or args.out / "demo" / "demo.csv"
    rows = pd.read_csv(csv, dtype=str, keep_default_na=False)
    torch_model, onnx_model = load(run, device="cpu", num_workers=0), load_bundle(bundle)
    torch_batch = best_of(args.repeats, lambda: torch_model.predict(csv))
    onnx_batch = best_of(args.repeats, lambda: onnx_model.predict(csv))
    single = [rows.iloc[[i % len(rows)]].reset_index(drop=True) for i in range(args.single)]
    root = str(csv.parent)
    torch_one = median_latency(args.single, lambda i: torch_model.predict(single[i], root=root))
    onnx_one = median_latency(args.single, lambda i: onnx_model.predict(single[i], root=root))
    server = serve(bundle, csv, args.clients, args.requests)
    print(f"| | PyTorch (load(run).predict) | bundle (onnxruntime) | ratio |\n| --- | --- | --- | --- |\n"
          f"| {len(rows)} rows in one call: rows/s | {len(rows) / torch_batch:.0f} | {len(rows) / onnx_batch:.0f} | "
          f"{torch_batch / onnx_batch:.2f}x |\n"
          f"| one row per call: median latency | {torch_one:.1f} ms | {onnx_one:.1f} ms | {torch_one / onnx_one:.2f}x |")
    print(f"\ncmserve, {args.clients} clients x {args.requests} requests of one row: {server['requests']} answered, "
          f"{server['errors']} errors, {server['per_second']:.0f} requests/s, p50 {server['p50_ms']:.1f} ms, "
          f"p99 {server['p99_ms']:.1f} ms, {server['per_call']:.1f} requests per model call")


if __name__ == "__main__":
    main()
