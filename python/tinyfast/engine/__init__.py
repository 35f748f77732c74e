"""The engine: step loop (LLMEngine), background driver for servers (AsyncLLM), model runner."""

from tinyfast.engine.async_llm import AsyncLLM, EngineDeadError
from tinyfast.engine.llm_engine import EngineArgs, LLMEngine
from tinyfast.engine.model_runner import ModelRunner

__all__ = ["AsyncLLM", "EngineArgs", "EngineDeadError", "LLMEngine", "ModelRunner"]
