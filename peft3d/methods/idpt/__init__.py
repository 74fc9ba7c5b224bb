"""IDPT (Zha et al., ICCV 2023): the registration only, read by ``bench ls`` and ``bench validate`` without torch.
Declared exactly as a plugin declares a method (docs/extending.md): targets named relative to this package.
"""
from peft3d.core.plugins import Registration

registration = Registration(f"{__name__}.method:IDPT", config=f"{__name__}.config:IDPTConfig",
                            summary="IDPT: a graph network over the token features (kNN in feature space) "
                                    "makes one instance-aware prompt token before the last block")
