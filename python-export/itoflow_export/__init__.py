"""itoflow_export: export score networks to ONNX for itoflow (see docs/onnx-format.md)."""

from .checks import ContractError
from .export import ExportResult, export_module
from .metadata import MetadataError, ModelSpec, read_metadata
from .tracing import ExportError
from .verify import DEFAULT_TOL, VerificationError

__version__ = "0.1.0"

__all__ = [
    "ContractError", "DEFAULT_TOL", "ExportError", "ExportResult", "MetadataError", "ModelSpec",
    "VerificationError", "export_module", "read_metadata",
]
