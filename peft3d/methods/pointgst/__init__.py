"""PointGST (Liang et al., 2024/25): the registration only, read by ``bench ls`` and ``bench validate`` without
torch. Declared exactly as a plugin declares a method (docs/extending.md): targets named relative to this package.
"""
from peft3d.core.plugins import Registration

registration = Registration(f"{__name__}.method:PointGST", config=f"{__name__}.config:PointGSTConfig",
                            summary="PointGST: parallel adapter tuned in the graph-spectral domain of the patch "
                                    "centres (global and Morton-local Laplacian eigenbases)")
