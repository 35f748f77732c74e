"""tinyfast: fast local LLM inference from Python on MLX, with native kernels."""

from importlib.metadata import PackageNotFoundError, version

from tinyfast import _native  # noqa: F401  (loads _C, checks MLX interop)
from tinyfast._C import cpu_features, num_threads, set_num_threads
from tinyfast.engine import AsyncLLM, EngineArgs, LLMEngine
from tinyfast.llm import LLM
from tinyfast.outputs import CompletionOutput, Logprob, RequestOutput
from tinyfast.sampling_params import SamplingParams

try:
    __version__ = version("tinyfast")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "AsyncLLM",
    "CompletionOutput",
    "EngineArgs",
    "LLM",
    "LLMEngine",
    "Logprob",
    "RequestOutput",
    "SamplingParams",
    "__version__",
    "cpu_features",
    "num_threads",
    "set_num_threads",
]
