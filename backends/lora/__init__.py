"""LoRA adapters applied in the engine over one shared copy of the base model."""

from backends.lora.layers import PATHS, LoRABatch, LoRAContext, LoRALinear
from backends.lora.manager import LoRAManager
from backends.lora.weights import LoRAModule, LoRAWeights, load_adapter

__all__ = ["PATHS", "LoRABatch", "LoRAContext", "LoRALinear", "LoRAManager", "LoRAModule",
           "LoRAWeights", "load_adapter"]
