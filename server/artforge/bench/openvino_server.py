"""OpenVINO GenAI's continuous batching behind llama-server's streamed chat API, for
`artforge bench text --compare openvino` (see artforge.bench.peers).

Run by the bench in a Python of its own that has openvino-genai (it pins other transformers and
torch releases than ArtForge), so it imports nothing of ArtForge:

    python openvino_server.py --model OV_FOLDER --port PORT --threads 2 --slots 8

It is OpenVINO at its best here: its ContinuousBatchingPipeline with prefix caching and split
prompts ("dynamic split fuse"), one thread stepping it, each request read as it streams.
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openvino_genai as ov_genai

POLL_SECONDS = 0.0005  # a request's reader waits this long for its next tokens
KV_CACHE_GB = 1


class Batch:
    """One ContinuousBatchingPipeline and the thread that steps it while requests are in."""

    def __init__(self, model: str, threads: int, slots: int) -> None:
        scheduler = ov_genai.SchedulerConfig()
        scheduler.max_num_seqs = slots
        scheduler.cache_size = KV_CACHE_GB
        scheduler.enable_prefix_caching = True
        scheduler.dynamic_split_fuse = True
        self.pipe = ov_genai.ContinuousBatchingPipeline(model, scheduler, "CPU", {"INFERENCE_NUM_THREADS": threads})
        self.tokenizer = self.pipe.get_tokenizer()
        self._ids = itertools.count()
        self._work = threading.Condition()
        threading.Thread(target=self._run, daemon=True).start()

    def add(self, prompt: str, config: ov_genai.GenerationConfig) -> ov_genai.GenerationHandle:
        with self._work:
            handle = self.pipe.add_request(next(self._ids), prompt, config)
            self._work.notify()
        return handle

    def _run(self) -> None:
        while True:
            with self._work:
                self._work.wait_for(self.pipe.has_non_finished_requests)
            self.pipe.step()


def handler(batch: Batch) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._send(200 if self.path == "/health" else 404, b'{"status": "ok"}')

        def do_POST(self) -> None:
            if self.path != "/v1/chat/completions":
                self._send(404, b"{}")
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            arrived = time.perf_counter()
            prompt = batch.tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True)
            config = ov_genai.GenerationConfig()
            config.max_new_tokens = int(body["max_tokens"])
            config.repetition_penalty = float(body.get("repeat_penalty", 1.0))
            config.do_sample = False
            config.apply_chat_template = False  # applied above, as the other servers do
            handle = batch.add(prompt, config)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            tokens: list[int] = []
            first = last = arrived
            while handle.get_status() == ov_genai.GenerationStatus.RUNNING or handle.can_read():
                if not handle.can_read():
                    time.sleep(POLL_SECONDS)
                    continue
                new = [token for output in handle.read().values() for token in output.generated_ids]
                if new:
                    last = time.perf_counter()
                    first = first if tokens else last
                    tokens += new
                    self._chunk({"choices": [{"delta": {"content": batch.tokenizer.decode(new)}}]})
            timings = {
                "prompt_n": batch.tokenizer.encode(prompt, add_special_tokens=False).input_ids.shape[1],
                "prompt_ms": (first - arrived) * 1000,
                "predicted_n": len(tokens),
                "predicted_ms": (last - first) * 1000,
            }
            self._chunk({"choices": [], "timings": timings})
            self._write(b"data: [DONE]\n\n")
            self._write(b"")

        def _chunk(self, data: dict) -> None:
            self._write(b"data: " + json.dumps(data).encode() + b"\n\n")

        def _write(self, data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        def _send(self, status: int, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an OpenVINO GenAI folder (optimum-cli export openvino)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--slots", type=int, default=8)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(Batch(args.model, args.threads, args.slots)))
    server.serve_forever()


if __name__ == "__main__":
    main()
