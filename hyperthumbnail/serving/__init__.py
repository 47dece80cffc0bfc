"""Serving on Triton, and only that: the Python-backend models (`backends`, importable only inside
a Triton Python-backend stub), the model repository builder (`repository`), the tritonserver
process (`server_runtime`: the wheel's layout and environment, `server_flags`: the flags,
`server_log`: failure reasons from the log, `server_process`: start/wait/stop) and the demo.

What the in-process pipeline shares with the served models lives below this layer
(`hyperthumbnail.codec.steps`, `hyperthumbnail.runtime`). Submodules are imported on demand;
`import hyperthumbnail.serving` itself stays cheap.
"""
