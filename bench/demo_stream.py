"""The demo page's Write tab: streamed generation speed against the same model's non-streamed speed.

    python bench/demo_stream.py --model runs/tiny              # make train's model
    python bench/demo_stream.py --model runs/tiny --new_tokens 200 --intervals 0 0.05 0.1

app.py runs in a process of its own (as `make demo` runs it), with the given --stream_interval; this process is the
visitor, through gradio_client. For each interval: Compare's tokens/s (the same generate() call, nothing streamed)
and Write's, both as the page reports them (generate()'s own time), plus Write's wall clock as the visitor sees it
(from the request to the last update). Best of --repeats after a warm-up; the same seed, so every row makes the
same tokens. Interval 0 is one page update per token (what the page did before it batched updates).
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/tiny")
    p.add_argument("--prompt", default="Once upon a time")
    p.add_argument("--new_tokens", type=int, default=200)
    p.add_argument("--intervals", type=float, nargs="+", default=[0.0, 0.2])
    p.add_argument("--repeats", type=int, default=3)
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rate(info: str) -> tuple[int, float]:
    """(tokens, tokens/s) from the page's info line: '... ; 200 tokens at 1,234 tokens/s'."""
    n, speed = re.search(r"(\d+) tokens at ([\d,]+) tokens/s", info).groups()
    return int(n), float(speed.replace(",", ""))


def serve(model: str, interval: float):
    port = free_port()
    args = [
        sys.executable,
        str(ROOT / "app.py"),
        "--model",
        model,
        "--stream_interval",
        str(interval),
        "--server_port",
        str(port),
    ]
    server = subprocess.Popen(
        args,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    from gradio_client import Client

    end = time.time() + 180
    while time.time() < end:
        try:
            return server, Client(f"http://127.0.0.1:{port}/", verbose=False)
        except Exception:  # noqa: BLE001 - not listening yet
            time.sleep(0.5)
    server.kill()
    raise SystemExit("error: app.py did not start within 180 s")


def measure(a, interval: float) -> dict:
    server, client = serve(a.model, interval)
    settings = (a.new_tokens, 0.8, 50, 0.95, 7)  # sampled, seeded: the same tokens every time
    try:
        compare, write, wall, updates = [], [], [], 0
        for i in range(a.repeats + 1):  # the first round warms up
            *_, info = client.predict(a.model, a.model, a.prompt, *settings, api_name="/compare")
            t0 = time.perf_counter()
            job = client.submit(a.model, a.prompt, *settings, api_name="/write")
            outputs = job.result(timeout=600)
            seconds = time.perf_counter() - t0
            if i == 0:
                continue
            tokens, write_rate = rate(outputs[3])
            compare.append(rate(info)[1])
            write.append(write_rate)
            wall.append(tokens / seconds)
            updates = len(job.outputs())
        return {
            "interval": interval,
            "tokens": tokens,
            "compare": max(compare),
            "write": max(write),
            "wall": max(wall),
            "updates": updates,
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(argv=None):
    a = parse(sys.argv[1:] if argv is None else argv)
    if not (Path(a.model) / "config.json").is_file():
        sys.exit(f"error: no model at {a.model} (make train writes runs/tiny); pass --model FOLDER.")
    rows = [measure(a, interval) for interval in a.intervals]
    print(
        f"\n{a.model}; prompt {a.prompt!r}, {a.new_tokens} new tokens sampled (seed 7), best of {a.repeats}; server in its own process\n"
    )
    print(
        "| stream interval, s | page updates | Compare tokens/s (not streamed) | Write tokens/s (streamed) | Write / Compare | Write, visitor's wall clock tokens/s |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['interval']:g} | {r['updates']} | {r['compare']:,.0f} | {r['write']:,.0f} | {r['write'] / r['compare']:.2f}x | {r['wall']:,.0f} |"
        )
    return rows


if __name__ == "__main__":
    main()
