"""A real OpenAI-compatible chat API for tests: llama.cpp's server (llama-cpp-python) over the
Qwen2.5-Coder-1.5B-Instruct GGUF that ``scripts/build-llm.sh`` builds and caches (``make llm``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from recops_localcluster import procs
from tests.support.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
MODEL_NAME = "qwen2.5-coder-1.5b-instruct"


class ChatModel:
    def __init__(self, workdir: Path):
        out = (
            subprocess.run(
                [str(ROOT / "scripts" / "build-llm.sh")], check=True, capture_output=True, text=True
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        home = Path(out)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        log = workdir / "llm.log"
        args = [
            str(home / "venv" / "bin" / "python"),
            "-m",
            "llama_cpp.server",
            "--model",
            str(home / "model.gguf"),
        ]
        args += ["--model_alias", MODEL_NAME, "--host", "127.0.0.1", "--port", str(self.port)]
        args += ["--n_ctx", "4096", "--n_threads", "2"]
        with log.open("ab") as sink:
            self.proc = subprocess.Popen(args, stdout=sink, stderr=subprocess.STDOUT)
        procs.wait_http(f"{self.url}/models", self.proc, log=log, what="llama_cpp.server", timeout=120)

    def stop(self) -> None:
        procs.stop(self.proc)
