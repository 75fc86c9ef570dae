"""Export to ONNX: ``to_onnx(model, "model.onnx")`` writes a graph that onnxruntime runs in place of ``predict``.

::

    from normlab.export import to_onnx
    to_onnx(model, "model.onnx")                    # opset 17, dynamic batch, input "input", output "output"

    import onnxruntime as ort
    session = ort.InferenceSession("model.onnx")
    probabilities = session.run(None, {"input": x.astype("float32")})[0]   # == model.predict(x)

Which layer becomes which operators, the layout handling and the figures:
``docs/onnx.md``. Importing this package does not import ``onnx``; calling
:func:`to_onnx` does (the ``onnx`` extra).
"""

from ._activations import NAMES as ACTIVATIONS
from ._convert import register_converter
from ._graph import ExportError
from ._onnx import DEFAULT_OPSET, to_onnx

__all__ = ["to_onnx", "register_converter", "supported_layers", "ExportError", "DEFAULT_OPSET", "ACTIVATIONS"]


def supported_layers() -> list[str]:
    """The names of the layer classes :func:`to_onnx` converts (including any registered by the user)."""
    from ._convert import CONVERTERS

    return sorted(c.__name__ for c in CONVERTERS)
