"""Training rules: backpropagation and the feedback-alignment family."""

from .base import (
    ENTRY_POINT_GROUP,
    Method,
    MethodError,
    available_methods,
    get_method,
    method_class,
    method_reference,
    register,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Method",
    "MethodError",
    "available_methods",
    "get_method",
    "method_class",
    "method_reference",
    "register",
]
