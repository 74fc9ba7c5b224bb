import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_TRACKING_URI", "")  # tests pass explicit results dirs / URIs
if not os.environ["MLFLOW_TRACKING_URI"]:
    del os.environ["MLFLOW_TRACKING_URI"]
