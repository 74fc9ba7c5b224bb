"""DAPT (Zhou et al., CVPR 2024): the registration only, read by ``bench ls`` and ``bench validate`` without torch.

Declared exactly as a plugin declares a method (docs/extending.md): a :class:`~peft3d.core.plugins.Registration`
whose targets are named relative to this package, so the folder works unchanged inside another distribution.
"""
from peft3d.core.plugins import Registration

registration = Registration(f"{__name__}.method:DAPT", config=f"{__name__}.config:DAPTConfig",
                            summary="DAPT: scale-shift at six points of every block, a per-token dynamic adapter "
                                    "beside the FFN, one internal prompt added after every block")
