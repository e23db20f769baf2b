"""silenced_output: native writes to file descriptors 1 and 2 are dropped inside the block, the environment
switches are set inside and restored after."""
from __future__ import annotations

import os

from edgecnn.quiet import silenced_output


def test_native_output_is_silenced_and_environment_restored(capfd, monkeypatch):
    monkeypatch.delenv("EDGECNN_QUIET_PROBE", raising=False)
    monkeypatch.setenv("EDGECNN_QUIET_KEEP", "before")
    with silenced_output({"EDGECNN_QUIET_PROBE": "1", "EDGECNN_QUIET_KEEP": "inside"}):
        os.write(1, b"native stdout\n")
        os.write(2, b"native stderr\n")
        print("python stdout")
        assert os.environ["EDGECNN_QUIET_PROBE"] == "1" and os.environ["EDGECNN_QUIET_KEEP"] == "inside"
    os.write(2, b"after\n")
    out, err = capfd.readouterr()
    assert "native" not in out + err and "python stdout" not in out and "after" in err
    assert "EDGECNN_QUIET_PROBE" not in os.environ and os.environ["EDGECNN_QUIET_KEEP"] == "before"
