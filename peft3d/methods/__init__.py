"""Method registry: ``name -> "peft3d.methods.<name>.method:<Class>"``. Adding a method = a folder + a line."""
from peft3d.registry import Registry

METHODS = Registry("method")
METHODS.register("linear", "peft3d.methods.linear.method:Linear", summary="frozen backbone; only tokenizer, "
                 "positional encoding, cls, final norm and head train")
METHODS.register("full", "peft3d.methods.full.method:Full", summary="every weight trains (reference)")
METHODS.register("prompt", "peft3d.methods.prompt.method:Prompt", summary="VPT-deep: P learnable tokens per block")
METHODS.register("adapter", "peft3d.methods.adapter.method:Adapter",
                 summary="AdaptFormer: bottleneck adapter parallel to each FFN")
METHODS.register("lora", "peft3d.methods.lora.method:LoRA", summary="Hugging Face peft LoRA on attention projections")
