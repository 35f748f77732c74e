"""The engine: model runner (batch building + forward); the step loop is planned."""

from tinyfast.engine.model_runner import ModelRunner

__all__ = ["ModelRunner"]
