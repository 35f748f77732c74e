"""The engine: step loop (LLMEngine), background driver for servers (AsyncLLM), model runner."""

from tinyfast.engine.async_llm import AsyncLLM, EngineDeadError
from tinyfast.engine.llm_engine import EngineArgs, LLMEngine

__all__ = ["AsyncLLM", "EngineArgs", "EngineDeadError", "LLMEngine"]
