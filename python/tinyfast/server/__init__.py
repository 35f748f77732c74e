"""OpenAI- and Ollama-compatible HTTP server over AsyncLLM (FastAPI + uvicorn).

`create_app(async_llm, model_id, ...)` builds the ASGI app; `serve(model, ...)` loads a model and
runs it (`tinyfast serve`). Needs the server dependencies (fastapi, uvicorn, prometheus-client).
"""

from tinyfast.server.app import create_app
from tinyfast.server.serve import serve

__all__ = ["create_app", "serve"]
