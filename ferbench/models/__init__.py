"""Model zoo: ``register_model``, ``create_model``, ``list_models`` and model cards."""

from ferbench.models import cnn as _cnn  # noqa: F401  (cnn5, cnn3, vggfer, vggfer_s)
from ferbench.models import timm_zoo as _timm_zoo  # noqa: F401  (registers resnet18/34/50)
from ferbench.models._registry import (
    ModelCard,
    create_model,
    is_model,
    list_models,
    model_card,
    register_model,
)

__all__ = ["ModelCard", "create_model", "is_model", "list_models", "model_card", "register_model"]
