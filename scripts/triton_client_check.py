#!/usr/bin/env python3
"""Drives a KServe v2 server with NVIDIA's Triton HTTP client (tritonclient[http] from PyPI).

kiln's test suite runs it against `kiln serve` to prove that an existing client, which kiln did
not write, works unchanged. Usage:

    triton_client_check.py HOST:PORT MODEL ROWS.json

ROWS.json holds a list of feature rows. Prints one JSON object with what the client saw.
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def main() -> None:
    url, model, rows_path = sys.argv[1], sys.argv[2], sys.argv[3]
    rows = np.asarray(json.load(open(rows_path)), dtype=np.float32)
    client = httpclient.InferenceServerClient(url=url)
    out = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "server": client.get_server_metadata(),
        "model": client.get_model_metadata(model),
    }
    meta = out["model"]
    input_name = meta["inputs"][0]["name"]
    output_names = [o["name"] for o in meta["outputs"]]

    # Binary tensors both ways: the client's default.
    x = httpclient.InferInput(input_name, list(rows.shape), "FP32")
    x.set_data_from_numpy(rows)
    r = client.infer(model, [x])
    out["binary"] = {n: r.as_numpy(n).tolist() for n in output_names}

    # JSON tensors both ways, with explicitly requested outputs.
    x = httpclient.InferInput(input_name, list(rows.shape), "FP32")
    x.set_data_from_numpy(rows, binary_data=False)
    wanted = [httpclient.InferRequestedOutput(n, binary_data=False) for n in output_names]
    r = client.infer(model, [x], outputs=wanted, request_id="42")
    out["json"] = {n: r.as_numpy(n).tolist() for n in output_names}
    out["json_id"] = r.get_response()["id"]

    # A wrong shape comes back as the client's exception, with the server's message.
    bad = np.zeros((1, rows.shape[1] + 1), dtype=np.float32)
    x = httpclient.InferInput(input_name, list(bad.shape), "FP32")
    x.set_data_from_numpy(bad)
    try:
        client.infer(model, [x])
        out["bad_shape"] = None
    except InferenceServerException as e:
        out["bad_shape"] = {"status": e.status(), "message": e.message()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
