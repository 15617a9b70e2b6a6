"""Installs the `capsule-python` kernelspec (kernel.json) with jupyter_client."""
from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Dict, Optional

from .. import errors

KERNEL_NAME = "capsule-python"


def spec(pool: Optional[str] = None, namespace: Optional[str] = None, gateway: Optional[str] = None) -> Dict:
    """kernel.json: this Python runs the kernel; pool, namespace and gateway go in its env."""
    env = {k: v for k, v in (("CAPSULE_POOL", pool), ("CAPSULE_NAMESPACE", namespace),
                             ("CAPSULE_GATEWAY_URL", gateway)) if v}
    return {
        "argv": [sys.executable, "-m", "capsule_client.kernel", "-f", "{connection_file}"],
        "display_name": f"Capsule Python ({pool})" if pool else "Capsule Python",
        "language": "python",
        # An interrupt arrives as a control message; the kernel turns it into SIGINT for itself,
        # which cancels the running execution on the worker.
        "interrupt_mode": "message",
        "env": env,
        "metadata": {"debugger": False},
    }


def install(user: bool = False, prefix: Optional[str] = None, sys_prefix: bool = False,
            pool: Optional[str] = None, namespace: Optional[str] = None, gateway: Optional[str] = None) -> str:
    """Installs the kernelspec; returns the directory it went to."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager
    except ImportError:
        raise errors.ConfigError("jupyter_client is not installed: pip install 'capsule-client[kernel]' jupyter_client") from None
    if sys_prefix:
        prefix = sys.prefix
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "kernel.json"), "w") as f:
            json.dump(spec(pool, namespace, gateway), f, indent=2)
        return KernelSpecManager().install_kernel_spec(d, KERNEL_NAME, user=user, prefix=prefix)
