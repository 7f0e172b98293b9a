"""Identity of the VariantAutoscaling resource (kept apart from the models so light modules can use it)."""

GROUP = "llmd.ai"
VERSION = "v1alpha1"
PLURAL = "variantautoscalings"
SINGULAR = "variantautoscaling"
KIND = "VariantAutoscaling"
SHORT_NAME = "va"
API_VERSION = f"{GROUP}/{VERSION}"
