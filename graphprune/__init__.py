"""graphprune: model-agnostic structured pruning over a graph IR, with verified output.

    import graphprune
    result = graphprune.prune("model.onnx", method="magnitude", ratio=0.5)
    result.save("small.onnx")
"""

from graphprune.api import Inspection, PruneResult, inspect, plan, prune, verify_files
from graphprune.config import PruneConfig
from graphprune.errors import (GraphPruneError, InputShapeError, InternalError, ModelLoadError, UnsupportedModelError,
                     UsageError, VerificationError)
from graphprune.tools.prunability import PrunabilityResult, prunability

__version__ = "0.1.0"
__all__ = ["GraphPruneError", "InputShapeError", "Inspection", "InternalError", "ModelLoadError", "PruneConfig",
           "PruneResult", "UnsupportedModelError", "UsageError", "VerificationError", "inspect", "plan", "prune",
           "verify_files", "__version__"]
__all__ += ["PrunabilityResult", "prunability"]
