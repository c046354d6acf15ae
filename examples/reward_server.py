#!/usr/bin/env python3
"""Example reward server for HTTPReward (protocol: docs/REWARD_SERVER.md). Standard library only.

    python3 examples/reward_server.py 8085        # then: ddpo ... --reward http://127.0.0.1:8085/

Toy reward: PNG size in kB + prompt length / 100 (replace `score` with a real model).
"""
import base64, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def score(png: bytes, prompt: str, metadata: dict) -> float:
    return len(png) / 1000 + len(prompt) / 100


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        batch = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        pngs = [base64.b64decode(s) for s in batch["images"]]
        rewards = [score(p, t, m) for p, t, m in zip(pngs, batch["prompts"], batch["metadata"])]
        body = json.dumps({"rewards": rewards, "metadata": {"png_bytes": [len(p) for p in pngs]}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8085), Handler)
    print(f"listening on http://127.0.0.1:{server.server_port}/", flush=True)
    server.serve_forever()
