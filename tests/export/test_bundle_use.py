"""Using a bundle: the runtime without torch (in a process where `import torch` fails), resampling as torchaudio
does, in-memory cells, its one-line mistakes, the cmexport command, and cmserve as a real process on a loopback
port: its answers equal the runtime's, bad requests get a 4xx and leave it up, and a bounded load test."""
from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.runtime import load_bundle
from crossmodal_cli.runtime.resample import resample

from console import console
from shipping import assert_same_predictions, demo_csv, request, serving, trained_bundle

REQUESTS = 50  # per client (scripts/serve_load.py runs the 8 x 200 of docs/serving.md)
BLOCK_TORCH = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "torchvision", "torchaudio", "transformers", "hydra", "omegaconf"}:
            raise ImportError(f"{name} is blocked: the runtime must not import it")
sys.meta_path.insert(0, NoTorch())
"""


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shipped")
    csv = demo_csv(folder / "demo", rows=60)
    run, bundle = trained_bundle(csv, folder, ["fusion=attention"])
    blocker = folder / "no_torch"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCK_TORCH)
    return csv, run, bundle, blocker


def no_torch_env(blocker: Path) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]),
            "PYTHONWARNINGS": "ignore"}


def test_the_runtime_predicts_in_a_process_where_torch_cannot_be_imported(shipped):
    csv, _, bundle, blocker = shipped
    code = (f"import sys; from crossmodal_cli.runtime import load_bundle; import crossmodal_cli.serve; "
            f"t = load_bundle({str(bundle)!r}).predict({str(csv)!r}, on_missing='zero'); "
            f"assert not any(m.split('.')[0] in ('torch', 'transformers', 'hydra') for m in sys.modules); "
            f"print(len(t), t['predicted'].iloc[0])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=no_torch_env(blocker))
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = load_bundle(bundle).predict(csv, on_missing="zero")
    assert proc.stdout.split() == [str(len(expected)), expected["predicted"].iloc[0]]
    blocked = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True,
                             env=no_torch_env(blocker))
    assert blocked.returncode != 0 and "blocked" in blocked.stderr  # the blocker works


@pytest.mark.parametrize(("orig", "new"), [(44100, 16000), (8000, 16000), (22050, 8000), (11025, 8000)])
def test_resampling_equals_torchaudio(orig, new):
    import torch
    import torchaudio.functional as AF

    wave = np.random.default_rng(0).normal(0, 0.3, 12345).astype(np.float32)
    expected = AF.resample(torch.from_numpy(wave), orig, new).numpy()
    got = resample(wave, orig, new)
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-6


def test_audio_at_another_rate_and_in_memory_cells_predict_as_cmpredict(shipped, tmp_path):
    csv, run, bundle, _ = shipped
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False).iloc[:12].reset_index(drop=True)
    root = csv.parent
    (tmp_path / "wav").mkdir()
    for i, path in enumerate(frame["audio_path"]):
        if path and i % 2:  # every other clip at 11,025 Hz, stereo: mixed down and resampled to 8 kHz
            data, rate = sf.read(root / path, dtype="float32")
            stretched = np.interp(np.arange(0, len(data), rate / 11025), np.arange(len(data)), data)
            sf.write(tmp_path / "wav" / f"{i}.wav", np.stack([stretched, stretched * 0.5], 1), 11025)
            frame.loc[i, "audio_path"] = str(tmp_path / "wav" / f"{i}.wav")
    frame.to_csv(tmp_path / "rates.csv", index=False)
    for name in ("image_path",):
        frame[name] = frame[name].map(lambda p: str(root / p) if p else p)
    assert_same_predictions(run, bundle, tmp_path / "rates.csv", on_missing="zero")
    memory = frame.copy()  # bytes and PIL images instead of paths: the same numbers
    memory["image_path"] = [Image.open(p).copy() if p else None for p in frame["image_path"]]
    memory["audio_path"] = [Path(p if os.path.isabs(p) else root / p).read_bytes() if p else None
                            for p in frame["audio_path"]]
    from_files = load_bundle(bundle).predict(frame, on_missing="zero", root=str(root))
    from_memory = load_bundle(bundle).predict(memory, on_missing="zero")
    np.testing.assert_allclose(from_memory.filter(like="prob_").to_numpy(), from_files.filter(like="prob_").to_numpy(),
                               atol=1e-6)


def test_runtime_mistakes_are_one_line(shipped, tmp_path):
    csv, _, bundle, _ = shipped
    with pytest.raises(CrossmodalError, match="input column audio_path missing; the bundle reads image_path, text, "
                                              "audio_path"):
        load_bundle(bundle).predict(pd.DataFrame({"image_path": ["a.png"], "text": ["x"]}))
    with pytest.raises(CrossmodalError, match=r"row at line \d+: no image in column image_path .*on_missing='zero'"):
        load_bundle(bundle).predict(csv, on_missing="error")
    dropped = load_bundle(bundle).predict(csv, on_missing="drop")
    assert len(dropped) == len(pd.read_csv(csv)) - 3
    with pytest.raises(CrossmodalError, match="not an exported bundle"):
        load_bundle(tmp_path)
    with pytest.raises(CrossmodalError, match="nope.csv: CSV file not found"):
        load_bundle(bundle).predict(tmp_path / "nope.csv")
    with pytest.raises(CrossmodalError, match="rows: expected a CSV path, a pandas DataFrame or a list"):
        load_bundle(bundle).predict(42)


def test_cmexport_writes_a_bundle_and_its_mistakes_are_one_line(shipped, tmp_path):
    _, run, _, _ = shipped
    proc = subprocess.run([*console("cmexport"), f"ckpt={run}", f"out={tmp_path / 'b'}"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(f"bundle written: {tmp_path / 'b'}")
    assert {p.name for p in (tmp_path / "b").iterdir()} >= {"model.onnx", "bundle.json", "tokenizer.json",
                                                            "card.json", "card.md"}
    card = (tmp_path / "b/card.md").read_text()
    assert "**Predicts:** classification: 3 classes" in card and "| accuracy |" in card and "`image_path`" in card
    (tmp_path / "full").mkdir()
    (tmp_path / "full/keep.txt").write_text("mine")
    for args, message in ([["ckpt=nope", "out=x"], "ckpt=nope: no such checkpoint"],
                          [[f"ckpt={run}"], "out= missing"], [["ckpt=a", "out=b", "opset=3"], "opset=3: not an argument"],
                          [[f"ckpt={run}", f"out={tmp_path / 'full'}"], "exists and is not a bundle"]):
        proc = subprocess.run([*console("cmexport"), *args], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, \
            proc.stderr
    assert (tmp_path / "full/keep.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def server(shipped):
    _, _, bundle, blocker = shipped
    with serving(bundle, "max_body_mb=1", env=no_torch_env(blocker)) as port:
        yield port


def rows_of(csv: Path, count: int) -> list[dict]:
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    frame = frame[(frame["image_path"] != "") & (frame["audio_path"] != "") & (frame["text"] != "")].iloc[:count]
    encode = lambda p: base64.b64encode((csv.parent / p).read_bytes()).decode()
    return [{"image_path": encode(r.image_path), "text": r.text, "audio_path": encode(r.audio_path)}
            for r in frame.itertuples()], frame


def test_the_server_answers_as_the_runtime_does_and_stays_up_after_bad_requests(shipped, server):
    csv, _, bundle, _ = shipped
    rows, frame = rows_of(csv, 5)
    status, answer = request(server, "POST", "/predict", json.dumps({"rows": rows}).encode(),
                             {"Content-Type": "application/json"})
    assert status == 200, answer
    expected = load_bundle(bundle).predict(frame.assign(image_path=[str(csv.parent / p) for p in frame.image_path],
                                                        audio_path=[str(csv.parent / p) for p in frame.audio_path]))
    got = pd.DataFrame(answer["predictions"])
    assert got["predicted"].tolist() == expected["predicted"].tolist()
    np.testing.assert_allclose(got.filter(like="prob_").to_numpy(), expected.filter(like="prob_").to_numpy(), atol=1e-6)
    boundary = "xx-boundary"
    first = frame.iloc[0]
    parts = [(f'--{boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\n{first.text}\r\n').encode()]
    for column in ("image_path", "audio_path"):
        parts.append((f'--{boundary}\r\nContent-Disposition: form-data; name="{column}"; filename="f"\r\n'
                      f'Content-Type: application/octet-stream\r\n\r\n').encode()
                     + (csv.parent / first[column]).read_bytes() + b"\r\n")
    status, answer = request(server, "POST", "/predict/upload", b"".join(parts) + f"--{boundary}--\r\n".encode(),
                             {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200 and answer["predictions"][0]["predicted"] == expected["predicted"].iloc[0], answer
    bad = [(b"{not json", 400, "not JSON"), (json.dumps({"rows": []}).encode(), 400, "at least one row"),
           (json.dumps({"rows": [{"text": "x"}]}).encode(), 422, "column 'image_path' missing"),
           (json.dumps({"rows": [{**rows[0], "text": 5}]}).encode(), 422, "rows[0].text: expected a string"),
           (json.dumps({"rows": [{**rows[0], "image_path": "%%%"}]}).encode(), 422, "not valid base64"),
           (json.dumps({"rows": [{**rows[0], "image_path": base64.b64encode(b"not a png").decode()}]}).encode(),
            422, "cannot read image"),
           (b"x" * (2 << 20), 413, "over the limit")]
    for body, code, message in bad:
        status, answer = request(server, "POST", "/predict", body, {"Content-Type": "application/json"})
        assert status == code and message in answer["error"] and "\n" not in answer["error"], (status, answer)
    status, answer = request(server, "POST", "/predict", json.dumps({"rows": [{**rows[0], "text": None}, rows[1]]})
                             .encode(), {"Content-Type": "application/json"})  # on_missing=zero: masked
    assert status == 200 and [p["row"] for p in answer["predictions"]] == [0, 1], answer
    assert request(server, "GET", "/health") == (200, {"status": "ok"})
    status, meta = request(server, "GET", "/metadata")
    assert status == 200 and meta["columns"] == {"image": "image_path", "text": "text", "audio": "audio_path"}
    assert meta["card"]["predicts"].startswith("classification")


def test_eight_concurrent_clients_get_every_answer_and_share_model_calls(shipped, server):
    csv = shipped[0]
    rows, _ = rows_of(csv, 8)
    latencies, failures = [], []

    def client(i: int) -> None:
        body = json.dumps({"rows": [rows[i]]}).encode()
        connection = http.client.HTTPConnection("127.0.0.1", server, timeout=60)
        for _ in range(REQUESTS):
            start = time.perf_counter()
            connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            latencies.append(time.perf_counter() - start)
            if response.status != 200:
                failures.append(response.status)
        connection.close()

    before = request(server, "GET", "/metadata")[1]["served"]
    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    assert not failures and len(latencies) == 8 * REQUESTS
    served = request(server, "GET", "/metadata")[1]["served"]
    assert served["requests"] - before["requests"] == 8 * REQUESTS
    assert served["model_calls"] - before["model_calls"] < 8 * REQUESTS  # concurrent requests shared model calls
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    print(f"\n8 clients x {REQUESTS} requests: {8 * REQUESTS / seconds:.0f} requests/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
          f"{(served['requests'] - before['requests']) / (served['model_calls'] - before['model_calls']):.1f} "
          f"requests per model call")


def test_a_model_no_exporter_takes_is_one_line_naming_its_parts(shipped, tmp_path, monkeypatch):
    import torch

    from crossmodal_cli.exporting import export_bundle

    def refuse(*args, **kwargs):
        raise RuntimeError("an operator the exporter does not know\nand more detail")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    with pytest.raises(CrossmodalError) as caught:
        export_bundle(shipped[1] / "checkpoints" / "best.ckpt", tmp_path / "b")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("cannot export this model (encoders image: TinyCNN, text: ")
    assert "AttentionFusion; task Classification" in message
    assert "dynamo: RuntimeError: an operator the exporter does not know; torchscript: RuntimeError" in message
    assert not (tmp_path / "b" / "bundle.json").exists()
