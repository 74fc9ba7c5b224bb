"""Tools for working on peft3d itself (not used by the harness): ``python -m peft3d.devtools.arch``."""
