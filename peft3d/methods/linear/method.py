from peft3d.methods.base import Method
from peft3d.methods.linear.config import LinearConfig


class Linear(Method):
    """Frozen backbone ("linear probing" of the point pipeline): nothing is inserted."""

    name, prefix, config_cls = "linear", "", LinearConfig

    def attach(self, model, cfg: LinearConfig) -> None:
        """Nothing to insert: the backbone arrives frozen (``build_model``)."""
