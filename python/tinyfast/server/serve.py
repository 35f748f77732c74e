"""`tinyfast serve`: load a model, start the engine thread, run uvicorn on 127.0.0.1 by default."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any, Sequence

from tinyfast.server.app import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_QUEUE, create_app

log = logging.getLogger("tinyfast.server")

# llama.cpp's `general.file_type` values (LLAMA_FTYPE_*) for the formats people use.
_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
               11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
               17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


def model_id_for(path: str | os.PathLike) -> str:
    """The id clients use for a model file or directory: its name without `.gguf`."""
    p = Path(path)
    return p.name.removesuffix(".gguf") if p.suffix == ".gguf" else p.name


def describe_model(path: str | os.PathLike) -> dict[str, Any]:
    """What /api/show and /api/tags report: format, family, size, quantization, scalar metadata."""
    p = Path(path)
    info: dict[str, Any] = {}
    try:
        stat = p.stat()
        info["size"] = stat.st_size if p.is_file() else sum(f.stat().st_size for f in p.iterdir() if f.is_file())
        from datetime import datetime, timezone

        info["modified_at"] = datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat()
    except OSError:
        pass
    if p.is_file():
        from tinyfast.loaders import GGUFFile

        g = GGUFFile(p)
        try:
            meta = g.metadata
            info["format"] = "gguf"
            info["family"] = str(meta.get("general.architecture", ""))
            info["parameter_size"] = str(meta.get("general.size_label", ""))
            ftype = meta.get("general.file_type")
            info["quantization_level"] = _FILE_TYPES.get(int(ftype), str(ftype)) if ftype is not None else ""
            info["metadata"] = {k: v for k, v in meta.items()
                                if not k.startswith("tokenizer.") and isinstance(v, (int, float, str))}
        finally:
            g.close()
    else:
        info["format"] = "safetensors"
    return info


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(model: str | None = None, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          allowed_origins: Sequence[str] | None = None, served_model_name: str | None = None,
          max_queue: int = DEFAULT_MAX_QUEUE, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, warmup: bool = True,
          log_level: str = "info", **engine_args: Any) -> None:
    """Loads `model` (the default model when None) and serves it until interrupted."""
    import uvicorn

    from tinyfast.default_model import default_model_path
    from tinyfast.engine.async_llm import AsyncLLM

    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    path = model or default_model_path()
    # Bind first: a busy port fails in a second, not after the model has loaded.
    sock = bind_socket(host, port)
    log.info("loading %s", path)
    llm = AsyncLLM.from_model(path, **engine_args)
    if llm.engine.tokenizer is None:
        llm.shutdown()
        raise ValueError(f"{path} has no tokenizer (tokenizer.json); the server needs one")
    model_id = served_model_name or model_id_for(path)
    app = create_app(llm, model_id, api_key=api_key, allowed_origins=allowed_origins, max_queue=max_queue,
                     max_body_bytes=max_body_bytes, warmup=warmup, model_info=describe_model(path))
    actual_host, actual_port = sock.getsockname()[:2]
    log.info("serving %r on http://%s:%d (OpenAI: /v1, Ollama: /api, /health, /metrics)",
             model_id, actual_host, actual_port)
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        llm.shutdown()
        sock.close()
